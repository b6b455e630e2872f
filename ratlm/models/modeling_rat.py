"""RATModel and RATForCausalLM in Hugging Face style (transformers 5.x), with their own cache.

    h = Embed(ids)
    for each layer:  h = h + Mixer(RMSNorm(h));  h = h + FFN(RMSNorm(h))
    logits = LMHead(RMSNorm(h))             (head tied to the embedding by default)

Padding and packed documents: real tokens are packed to the left of their row once per forward
(`Packing`), every layer runs on the packed rows, and the result goes back in place. A 2-D
`attention_mask` marks padding; `position_ids` that restart at 0 inside a row mark document
boundaries (each document is then computed exactly as if it were alone).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..layers import RAT, RNN, Attention, LayerCache, SlidingWindowAttention
from ..layers.common import Linear, init_gate_bias
from ..ops.dtypes import acc_dtype
from .configuration_rat import RATConfig

# transformers 5.24 renamed the cache argument and output field from `past_key_values` to `cache`.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class RATRMSNorm(nn.Module):
    """y = x * rsqrt(mean(x^2) + eps) * w (in float32, or float64 for float64 inputs)."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x):  # torch's rms_norm: the same arithmetic, one call (decode steps are many small calls)
        acc = acc_dtype(x.dtype)
        return nn.functional.rms_norm(x.to(acc), x.shape[-1:], self.weight.to(acc), self.eps).to(x.dtype)


class RATMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc1 = Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def build_mixer(config: RATConfig, i: int) -> nn.Module:
    kind = config.layer_types[i]
    D, H = config.hidden_size, config.num_attention_heads
    pe, theta = config.position_encoding, config.rope_theta
    if kind == "rat":
        return RAT(D, H, chunk_size=config.per_layer("chunk_size", i), qk_groups=config.per_layer("qk_groups", i),
                   position_encoding=pe, rope_theta=theta)
    if kind == "attention":
        return Attention(D, H, position_encoding=pe, rope_theta=theta)
    if kind == "sliding_attention":
        return SlidingWindowAttention(D, H, window=config.sliding_window, position_encoding=pe, rope_theta=theta)
    return RNN(D, gate_span=config.train_length)


class RATBlock(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_norm = RATRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mixer = build_mixer(config, layer_idx)
        self.ffn_norm = RATRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = RATMLP(config)

    def forward(self, h, layer_cache=None, lengths=None):
        h = h + self.mixer(self.input_norm(h), cache=layer_cache, lengths=lengths)
        return h + self.mlp(self.ffn_norm(h))


class RATCache(Cache):
    """The decode state of a whole model: one cache per layer, each holding what its mixer needs
    (RAT: final pairs of completed chunks + running pair; attention: keys/values; sliding window: a
    ring of the last W; RNN: the state). Each layer counts its rows' real tokens itself.

    `get_seq_length()` counts columns fed (padding included), which is what `generate` expects.
    """

    is_compileable = False

    def __init__(self, layers: Iterable[LayerCache], max_length: int | None = None):
        super().__init__(layers=list(layers))
        self.columns = 0
        self.max_length = max_length

    @classmethod
    def for_model(cls, model: RATModel | RATForCausalLM, batch_size: int, max_length: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> RATCache:
        """An empty cache for `model` (a RATModel or RATForCausalLM) and `batch_size` rows.
        `max_length` fixes the capacity (tokens per row); None grows as needed."""
        base = model.model if isinstance(model, RATForCausalLM) else model
        p = base.embed_tokens.weight
        layers = [blk.mixer.init_cache(batch_size, max_length, device or p.device, dtype or p.dtype)
                  for blk in base.layers]
        return cls(layers, max_length)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.columns

    def get_mask_sizes(self, query_length, layer_idx=0):
        return self.columns + query_length, 0

    def get_max_length(self, layer_idx=None):
        return -1 if self.max_length is None else self.max_length

    @property
    def is_croppable(self):
        return False

    def crop(self, tokens_to_remove):
        if tokens_to_remove:
            raise ValueError("a RAT cache holds recurrent state and cannot be cropped")

    def reset(self):
        super().reset()
        self.columns = 0

    @property
    def seen(self) -> torch.Tensor:
        """(B,) real tokens per row."""
        return self.layers[0].seen

    def nbytes(self) -> int:
        """Bytes of live decode state over all layers."""
        return sum(layer.nbytes() for layer in self.layers)

    def keep_rows(self, index):
        """Keep rows `index` ((N,) long tensor) in that order; the others' state is dropped (serving)."""
        for layer in self.layers:
            layer.keep_rows(index)

    def append_rows(self, other: RATCache):
        """Add the rows of `other` (a cache of the same model, rows at any positions) after ours."""
        if len(other.layers) != len(self.layers):
            raise ValueError(f"cannot append a cache of {len(other.layers)} layers to one of {len(self.layers)}")
        for mine, theirs in zip(self.layers, other.layers):
            mine.append_rows(theirs)

    @property
    def batch_size(self):
        return self.layers[0].batch_size


class Packing:
    """Moves each row's real tokens (or each document) to the left of its own row of a packed batch."""

    def __init__(self, rows, cols, valid, lengths, shape, documents=False):
        self.rows, self.cols, self.valid, self.lengths, self.shape = rows, cols, valid, lengths, shape
        self.documents = documents  # rows were split at document boundaries

    @classmethod
    def build(cls, mask, position_ids, keep_rows):
        """None when nothing needs moving. keep_rows: one packed row per input row (needed with a
        cache), so document boundaries are not allowed then."""
        B, T = (mask if mask is not None else position_ids).shape
        dev = (mask if mask is not None else position_ids).device
        if mask is None:
            if T == 1:  # a decode step without padding: nothing to move (and no device sync)
                return None
            mask = torch.ones(B, T, dtype=torch.bool, device=dev)
        before = mask.long().cumsum(1) - mask.long()  # real tokens before each position
        restarts = None
        if position_ids is not None and position_ids.shape[-1] == T and T > 1:  # one token cannot restart
            pid = position_ids.expand(B, T) if position_ids.dim() == 2 else position_ids[None].expand(B, T)
            restarts = (pid == 0) & mask & (before > 0)
            if not bool(restarts.any()):
                restarts = None
        if restarts is None:
            if bool(mask.all()):
                return None
            rows = torch.arange(B, device=dev)[:, None].expand(B, T)
            cols = before
            lengths = mask.long().sum(1)
            return cls(rows[mask], cols[mask], mask, lengths, (B, T))
        if keep_rows:
            raise ValueError("position_ids restart inside a row (packed documents) together with a cache; "
                             "packed documents are for training and scoring, feed one document per row to generate")
        seg_local = restarts.long().cumsum(1)  # document index within the row
        per_row = seg_local[:, -1] + 1
        offset = per_row.cumsum(0) - per_row
        seg = (seg_local + offset[:, None])[mask]
        seg_ids, seg = torch.unique(seg, return_inverse=True)  # drop empty documents
        pos = before[mask]
        first = torch.full((len(seg_ids),), T, dtype=pos.dtype, device=dev).scatter_reduce(0, seg, pos, "amin")
        cols = pos - first[seg]
        lengths = torch.bincount(seg, minlength=len(seg_ids))
        return cls(seg, cols, mask, lengths, (B, T), documents=True)

    def pack(self, h):
        S, Tm = len(self.lengths), int(self.lengths.max()) if len(self.lengths) else 0
        out = h.new_zeros(S, max(Tm, 1), h.shape[-1])
        return out.index_put((self.rows, self.cols), h[self.valid])

    def unpack(self, hp):
        B, T = self.shape
        out = hp.new_zeros(B, T, hp.shape[-1])
        return out.index_put((self.valid.nonzero(as_tuple=True)), hp[self.rows, self.cols])


class RATPreTrainedModel(PreTrainedModel):
    config_class = RATConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["RATBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True  # generate refuses assisted decoding, which needs cropping

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (RAT, RNN)):
            span = module.chunk_size if isinstance(module, RAT) else module.gate_span
            bias = torch.empty_like(module.gate_bias)
            init_gate_bias(bias, span)
            init.copy_(module.gate_bias, bias)

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # the model makes its own RATCache


class RATModel(RATPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: RATConfig):
        super().__init__(config)
        # no padding_idx: pads are masked, and a pad id shared with EOS must still train
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([RATBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RATRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def make_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> RATCache:
        return RATCache.for_model(self, batch_size, max_length, device, dtype)

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: RATCache | None = None,
                past_key_values: RATCache | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPast | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
        shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape)
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"the batch is empty ({'input_ids' if input_ids is not None else 'inputs_embeds'} has "
                             f"shape {shape}); give at least one row of at least one token")
        if _checking():
            if input_ids is not None:
                _check_token_ids(input_ids, self.config.vocab_size)
            if attention_mask is not None:
                _check_mask(attention_mask)
        explicit_cache = use_cache is True or cache is not None or past_key_values is not None
        if use_cache is None:  # a cache only when asked for (generate asks) or continued: scoring runs in parallel
            use_cache = cache is not None or past_key_values is not None
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        cache = cache if cache is not None else past_key_values
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = h.shape[:2]
        mask = None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(f"attention_mask must have shape (batch, >= {T}), got {tuple(attention_mask.shape)}")
            mask = attention_mask[:, -T:].bool()  # generate passes past + current columns
        packing = None
        if mask is not None or position_ids is not None:
            packing = Packing.build(mask, position_ids, keep_rows=explicit_cache)
            if packing is not None and packing.documents:
                use_cache = False  # several documents per row: nothing to continue from
        if use_cache and cache is None:
            cache = self.make_cache(B)
        lengths = None
        if packing is not None:
            h = packing.pack(h)
            lengths = packing.lengths
        hidden = [h] if output_hidden_states else None
        for i, block in enumerate(self.layers):
            h = block(h, None if cache is None else cache.layers[i], lengths)
            if output_hidden_states:
                hidden.append(h)
        h = self.norm(h)
        if hidden:  # as in transformers: the last entry is the normed output (== last_hidden_state)
            hidden[-1] = h
        if packing is not None:
            h = packing.unpack(h)
            if hidden:
                hidden = [packing.unpack(x) for x in hidden]
        if cache is not None:
            cache.columns += T
        out = BaseModelOutputWithPast(last_hidden_state=h, hidden_states=tuple(hidden) if hidden else None,
                                      **{CACHE_FIELD: cache if use_cache else None})
        return out if return_dict else out.to_tuple()


def _checking() -> bool:
    """Input checks that read values (a host sync) are skipped while compiling or capturing a CUDA graph."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def _check_token_ids(ids: torch.Tensor, vocab: int) -> None:
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    lo, hi = (int(v) for v in torch.aminmax(ids))
    if lo < 0 or hi >= vocab:
        raise ValueError(f"input_ids holds token id {lo if lo < 0 else hi}, outside the model's vocabulary of {vocab} "
                         f"(ids 0 to {vocab - 1}); use the tokenizer the model was trained with")


def _check_mask(mask: torch.Tensor) -> None:
    if mask.dtype == torch.bool:
        return
    if bool(((mask != 0) & (mask != 1)).any()):
        bad = mask[(mask != 0) & (mask != 1)][0].item()
        raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token), found {bad}")


class RATForCausalLM(RATPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: RATConfig):
        super().__init__(config)
        self.model = RATModel(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def make_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> RATCache:
        """An empty RATCache for `batch_size` rows (pass it as `cache=` to forward or generate)."""
        return RATCache.for_model(self, batch_size, max_length, device, dtype)

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: RATCache | None = None,
                past_key_values: RATCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs) -> CausalLMOutputWithPast | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
                             use_cache=use_cache, output_hidden_states=output_hidden_states, return_dict=True)
        h = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            h = h[:, -logits_to_keep:] if logits_to_keep > 0 else h
        else:
            h = h[:, logits_to_keep]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)})
        return out if return_dict else out.to_tuple()
