"""A rough lower bound of a run's memory, checked before anything is allocated, so that a request that
cannot fit fails at once with one line instead of an allocator error (or the OS killing the process)."""
from __future__ import annotations

import torch

from ..runtime import free_memory

GiB = 1 << 30


def parameter_count(config):
    """Parameters of a RATForCausalLM with this config, without allocating it."""
    from ..models import RATForCausalLM

    with torch.device("meta"):
        model = RATForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def estimate(config, micro_batch, seq_len, bf16=False, checkpointing=False, shards=1):
    """(weights + gradients + AdamW state, activations) in bytes: a lower bound, roughly."""
    P = parameter_count(config)
    states = 16 * P / shards  # fp32 weights, gradients and two AdamW moments
    act_bytes = 2 if bf16 else 4
    tokens = micro_batch * seq_len
    D, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    per_layer = tokens * (8 * D + 2 * I) * act_bytes  # what a block keeps for its backward pass, at least
    layers = 1 if checkpointing else config.num_hidden_layers
    acts = per_layer * layers + tokens * D * config.num_hidden_layers * act_bytes * checkpointing
    acts += tokens * V * 4 * 2  # logits in fp32 and their gradient
    return states, acts


def check(config, micro_batch, seq_len, device, bf16=False, checkpointing=False, shards=1, processes_here=1):
    """Raise ValueError when the run clearly cannot fit in the free memory of `device`."""
    free = free_memory(device)
    if free is None:
        return
    states, acts = estimate(config, micro_batch, seq_len, bf16, checkpointing, shards)
    need = states + acts
    if device.type == "cpu":
        need *= processes_here  # processes on one machine share its memory
    if need > free:
        hint = "lower --micro-batch-size (gradient accumulation keeps the global batch) or --seq-len"
        if not checkpointing:
            hint += ", or set --gradient-checkpointing true"
        if states > free:
            hint = "use a smaller model, more processes with --fsdp true, or a device with more memory"
        raise ValueError(f"this run needs at least about {need / GiB:.1f} GiB on {device.type} "
                         f"(weights, gradients and optimizer {states * processes_here / GiB:.1f}, activations "
                         f"{acts * processes_here / GiB:.1f}) but only {free / GiB:.1f} GiB is free; {hint}")
