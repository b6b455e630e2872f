"""Peak memory of one training step (forward + backward) of one layer per mixer, on CPU, in units of one
(T, D) float32 tensor. Run: `python scripts/train_memory.py --lengths 8192,16384`.

It re-executes itself with MALLOC_MMAP_THRESHOLD_=65536 so that glibc maps every tensor of 64 KiB or more
on its own and gives it back when freed: the peak resident-set growth is then the true peak of live
tensors, the same in every run (with the default allocator it moves by 30-100 MiB between steps, as the
allocator keeps freed memory). Not for timing: that setting makes allocations slower. Linux only.
"""
import argparse
import gc
import os
import sys

import torch

from ratlm.bench.system import PeakMemory
from ratlm.layers import RAT, RNN, Attention
from ratlm.ops import chunk_attention as ca

MIXERS = {
    "attention": lambda: Attention(512, 8),
    "rnn": lambda: RNN(512),
    "rat16": lambda: RAT(512, 8, chunk_size=16, qk_groups=2),  # the kernel ratlm picks for this length
    "rat16-flash": lambda: RAT(512, 8, chunk_size=16, qk_groups=2),
    "rat16-blocked": lambda: RAT(512, 8, chunk_size=16, qk_groups=2),
}


def measure(name, T):
    default = ca.FLASH_TRAIN_MIN_TOKENS
    ca.FLASH_TRAIN_MIN_TOKENS = {"rat16-flash": 0, "rat16-blocked": None}.get(name, default)
    torch.manual_seed(0)
    m = MIXERS[name]()
    x = torch.randn(1, T, 512, requires_grad=True)

    def step():
        m(x).float().square().mean().backward()

    step()  # gradients of x and of the weights exist from here on, as in training
    gc.collect()
    with PeakMemory("cpu") as pm:
        step()
    ca.FLASH_TRAIN_MIN_TOKENS = default
    return pm.bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="16384", help="comma list of sequence lengths (default 16384)")
    ap.add_argument("--mixers", default="attention,rnn,rat16,rat16-flash,rat16-blocked")
    args = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, D=512, 8 heads, float32, batch 1")
    for T in (int(t) for t in args.lengths.split(",")):
        unit = T * 512 * 4
        for name in args.mixers.split(","):
            peak = measure(name, T)
            print(f"T={T:6d} {name:14s} peak {peak / 2**20:7.1f} MiB = {peak / unit:5.2f} (T, D) float32 tensors",
                  flush=True)


if __name__ == "__main__":
    main()
