"""Sequence mixers (B, T, D) -> (B, T, D) and their decode caches."""
from .attention import Attention, SlidingWindowAttention
from .cache import KVCache, LayerCache, RATCache, RNNCache, WindowCache
from .rat import RAT
from .rnn import RNN

__all__ = ["RAT", "Attention", "SlidingWindowAttention", "RNN", "LayerCache", "RATCache", "KVCache",
           "WindowCache", "RNNCache"]
