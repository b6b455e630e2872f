"""Hugging Face style configuration and modeling; importing registers the Auto classes."""
from .configuration_rat import LAYER_TYPES, RATConfig
from .modeling_rat import RATCache, RATForCausalLM, RATModel, RATPreTrainedModel

__all__ = ["RATConfig", "RATModel", "RATForCausalLM", "RATPreTrainedModel", "RATCache", "LAYER_TYPES"]
