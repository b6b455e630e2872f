"""GPU check, for a session that has a CUDA machine: the CUDA parity tests (pytest -m cuda: the
automatic CUDA backend against the CPU reference, forward and backward, bfloat16 finite), then the
paper-setting benchmarks. Run: `python scripts/device_check.py --out DIR` (about 5 minutes).
"""
import argparse
import os
import subprocess
import sys

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/device"))
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests", "--junitxml",
                    os.path.join(args.out, "cuda_tests.xml")], check=False)
    if not args.skip_bench:
        for cmd in (["bench", "layer", "--preset", "paper", "--repeats", "3", "--out", args.out],
                    ["bench", "generate", "--size", "xl", "--prompt-len", "4096", "--new-tokens", "64",
                     "--batch", "16", "--repeats", "2", "--out", args.out]):
            subprocess.run([sys.executable, "-m", "ratlm", *cmd], check=False)


if __name__ == "__main__":
    main()
