"""Hugging Face style configuration and modeling. Importing this package registers RATConfig /
RATModel / RATForCausalLM with transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained(dir)`
works without trust_remote_code."""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_rat import LAYER_TYPES, RATConfig
from .modeling_rat import RATCache, RATForCausalLM, RATModel, RATPreTrainedModel
from .presets import preset_kwargs, preset_names
from .state_size import decode_state_bytes

AutoConfig.register(RATConfig.model_type, RATConfig, exist_ok=True)
AutoModel.register(RATConfig, RATModel, exist_ok=True)
AutoModelForCausalLM.register(RATConfig, RATForCausalLM, exist_ok=True)

__all__ = ["RATConfig", "RATModel", "RATForCausalLM", "RATPreTrainedModel", "RATCache", "LAYER_TYPES",
           "preset_kwargs", "preset_names", "decode_state_bytes"]
