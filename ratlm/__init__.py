"""ratlm: RAT language models (chunked gated recurrence + inter-chunk attention), exact and fast.

Importing ratlm registers RATConfig / RATModel / RATForCausalLM with transformers' Auto classes,
so `AutoModelForCausalLM.from_pretrained(dir)` works without trust_remote_code.
"""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .models import RATCache, RATConfig, RATForCausalLM, RATModel
from .models.presets import preset_kwargs, preset_names

__version__ = "0.1.0"


def _from_preset(cls, name, **overrides):
    """A config from a named preset (e.g. "rat-xl", "attention-swa-tiny"), with fields overridden."""
    return cls(**preset_kwargs(name, **overrides))


RATConfig.from_preset = classmethod(_from_preset)

AutoConfig.register(RATConfig.model_type, RATConfig, exist_ok=True)
AutoModel.register(RATConfig, RATModel, exist_ok=True)
AutoModelForCausalLM.register(RATConfig, RATForCausalLM, exist_ok=True)

__all__ = ["RATConfig", "RATModel", "RATForCausalLM", "RATCache", "preset_names", "__version__"]
