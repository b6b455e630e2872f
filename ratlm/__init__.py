"""ratlm: RAT language models (chunked gated recurrence + inter-chunk attention), exact and fast.

Importing ratlm registers RATConfig / RATModel / RATForCausalLM with transformers' Auto classes
(ratlm.models does it), so `AutoModelForCausalLM.from_pretrained(dir)` works without trust_remote_code.
"""
from importlib.metadata import PackageNotFoundError, version

from .models import RATCache, RATConfig, RATForCausalLM, RATModel, preset_names

try:
    __version__ = version("ratlm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["RATConfig", "RATModel", "RATForCausalLM", "RATCache", "preset_names", "__version__"]
