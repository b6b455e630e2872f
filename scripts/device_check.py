"""GPU check, for a session that has a CUDA machine: the CUDA paths' parity with the CPU reference,
then the paper-setting benchmarks. Run: `python scripts/device_check.py --out DIR` (about 5 minutes).

Parity: for RAT and sliding-window attention, the automatic CUDA backend (flex_attention, compiled)
against the plain PyTorch backend on CPU in float64-checked float32, forward and backward, and
bfloat16 forward/backward finite.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

from ratlm.layers import RAT, SlidingWindowAttention


def parity(out):
    rows = []
    for name, make in [("rat16", lambda: RAT(256, 4, chunk_size=16)), ("rat64", lambda: RAT(256, 4, chunk_size=64)),
                       ("swa128", lambda: SlidingWindowAttention(256, 4, window=128))]:
        for T in (1000, 4096):
            torch.manual_seed(0)
            ref = make()
            x = torch.randn(2, T, 256)
            x.requires_grad_(True)
            y_ref = ref(x)
            y_ref.square().mean().backward()
            g_ref = x.grad.clone()
            gpu = make().cuda()
            gpu.load_state_dict(ref.state_dict())
            xc = x.detach().cuda().requires_grad_(True)
            t0 = time.perf_counter()
            y = gpu(xc)
            y.square().mean().backward()
            torch.cuda.synchronize()
            err = (y.cpu() - y_ref).abs().max().item() / y_ref.abs().max().item()
            gerr = (xc.grad.cpu() - g_ref).abs().max().item() / g_ref.abs().max().item()
            bf = gpu.to(torch.bfloat16)
            xb = x.detach().cuda().bfloat16().requires_grad_(True)
            yb = bf(xb)
            yb.float().square().mean().backward()
            finite = bool(torch.isfinite(yb).all() and torch.isfinite(xb.grad).all())
            rows.append(dict(layer=name, T=T, rel_err_out=err, rel_err_grad=gerr, bf16_finite=finite,
                             first_call_s=time.perf_counter() - t0))
            print(rows[-1], flush=True)
    with open(os.path.join(out, "parity.json"), "w") as f:
        json.dump(rows, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/device"))
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    parity(args.out)
    if not args.skip_bench:
        for cmd in (["bench", "layer", "--preset", "paper", "--repeats", "3", "--out", args.out],
                    ["bench", "generate", "--size", "xl", "--prompt-len", "4096", "--new-tokens", "64",
                     "--batch", "16", "--repeats", "2", "--out", args.out]):
            subprocess.run([sys.executable, "-m", "ratlm", *cmd], check=False)


if __name__ == "__main__":
    main()
