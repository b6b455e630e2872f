"""Processes under torchrun: process group (NCCL on GPUs, gloo on CPU), DDP or FSDP2 wrapping, and
the few collectives the loop needs. Without torchrun everything is a no-op with world size 1."""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as td


class Dist:
    def __init__(self, device_spec="auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device_spec in (None, "auto") and torch.cuda.is_available() or str(device_spec).startswith("cuda")
        if str(device_spec).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device_spec}: torch sees no CUDA device; use --device cpu")
        if want_cuda:
            index = self.local_rank if self.world > 1 or device_spec in (None, "auto", "cuda") else \
                int(str(device_spec).split(":")[1])
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.started = False
        if self.world > 1 and not td.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            td.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
            self.started = True

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            td.barrier()

    def sum(self, values):
        """Sum a list of floats over processes (in float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            td.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """rank 0's `obj` on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj):
        """A list of every process's `obj` (on every process)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def close(self):
        if self.started and td.is_initialized():
            td.destroy_process_group()


def wrap(model, dist, fsdp=False):
    """DDP, FSDP2 (fully_shard on each block, then the whole model) or the model itself (one process)."""
    if dist.world == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.model.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)


def unwrap(model):
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


def no_sync(model, dist, fsdp, last):
    """A context for one micro-batch: gradients are synchronised only on the last one."""
    if dist.world == 1 or last:
        if fsdp and dist.world > 1:
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if fsdp:
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return model.no_sync()


def is_fsdp(model):
    return type(model).__name__.startswith("FSDP")
