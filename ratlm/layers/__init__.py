"""Sequence mixers (B, T, D) -> (B, T, D) and their decode caches."""
from .attention import Attention, SlidingWindowAttention
from .cache import ChunkCache, KVCache, LayerCache, RNNCache, WindowCache
from .rat import RAT
from .rnn import RNN

__all__ = ["RAT", "Attention", "SlidingWindowAttention", "RNN", "LayerCache", "ChunkCache", "KVCache",
           "WindowCache", "RNNCache"]
