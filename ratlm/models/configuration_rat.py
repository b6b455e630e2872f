"""RATConfig: one config for RAT, attention, sliding-window attention, RNN and hybrid language models.

(No `from __future__ import annotations` here: transformers' @strict checks field types at run time.)
"""
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

LAYER_TYPES = ("rat", "attention", "sliding_attention", "rnn")


@strict
class RATConfig(PreTrainedConfig):
    r"""Configuration of a ratlm causal language model.

    Every layer is `h = h + Mixer(RMSNorm(h)); h = h + FFN(RMSNorm(h))`, with the mixer given per layer
    by `layer_types`: "rat", "attention", "sliding_attention" or "rnn".

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: sizes.
        hidden_act: FFN activation ("gelu" is the exact, erf-based GELU of the paper).
        mlp_bias: biases in the FFN's two linear layers.
        rms_norm_eps: epsilon inside the RMSNorm square root.
        tie_word_embeddings: the output head shares the embedding matrix.
        layer_types: one entry per layer; default all "rat".
        chunk_size: RAT chunk length L (an int for all RAT layers, or one per layer).
        qk_groups: RAT query/key groups G (an int, or one per layer).
        sliding_window: W, the number of earlier tokens a sliding-window layer sees.
        position_encoding: "rope" (attention layers rotate by token position, RAT layers by chunk
            index) or "nope".
        rope_theta: RoPE base.
        train_length: training sequence length; the RNN gate bias is initialised from it.
        initializer_range: standard deviation of the normal initialisation.
    """

    model_type = "ratlm"
    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int | None = None
    hidden_act: str = "gelu"
    mlp_bias: bool = False
    rms_norm_eps: float | int = 1e-6
    tie_word_embeddings: bool = True
    layer_types: list[str] | None = None
    chunk_size: int | list[int] = 16
    qk_groups: int | list[int] = 2
    sliding_window: int = 1024
    position_encoding: str = "rope"
    rope_theta: float | int = 10000.0
    train_length: int = 4096
    initializer_range: float | int = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.layer_types is None:
            self.layer_types = ["rat"] * self.num_hidden_layers
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):  # 10000 in a hand-written config.json
            setattr(self, name, float(getattr(self, name)))
        super().__post_init__(**kwargs)
        # transformers renames a layer type "attention" to its own "full_attention"; we keep ours
        self.layer_types = ["attention" if t == "full_attention" else t for t in self.layer_types]

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "RATConfig":
        """A config from a named preset (e.g. "rat-xl", "attention-swa-tiny"), with fields overridden."""
        from .presets import preset_kwargs

        return cls(**preset_kwargs(name, **overrides))

    def per_layer(self, name: str, i: int):
        """chunk_size / qk_groups of layer i (a single value applies to every layer)."""
        value = getattr(self, name)
        return value[i] if isinstance(value, list) else value

    # transformers calls every validate_* at construction and again before saving.
    def validate_layer_type(self):
        if self.layer_types is None:
            return
        bad = sorted({t for t in self.layer_types if t not in LAYER_TYPES})
        if bad:
            raise ValueError(f"layer_types entries must be among {', '.join(LAYER_TYPES)}; got {', '.join(bad)}")
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                             f"{self.num_hidden_layers}; give one entry per layer")

    def validate_ratlm(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "sliding_window",
                     "train_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}; choose a number of heads that divides it")
        if self.position_encoding not in ("rope", "nope"):
            raise ValueError(f"position_encoding must be 'rope' or 'nope', got {self.position_encoding!r}")
        if self.position_encoding == "rope" and (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("RoPE needs an even head width (hidden_size / num_attention_heads); "
                             "change the sizes or use position_encoding='nope'")
        for name in ("chunk_size", "qk_groups"):
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) != self.num_hidden_layers:
                raise ValueError(f"{name} has {len(value)} entries but num_hidden_layers is {self.num_hidden_layers}")
            if any(v < 1 for v in values):
                raise ValueError(f"{name} must be >= 1, got {value}")
        groups = self.qk_groups if isinstance(self.qk_groups, list) else [self.qk_groups] * self.num_hidden_layers
        for i, (t, g) in enumerate(zip(self.layer_types or [], groups)):
            if t == "rat" and self.num_attention_heads % g:
                raise ValueError(f"layer {i}: num_attention_heads {self.num_attention_heads} is not divisible by "
                                 f"qk_groups {g}")
        from transformers.activations import ACT2FN

        if self.hidden_act not in ACT2FN:
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}; e.g. 'gelu' (exact) or 'gelu_new'")
