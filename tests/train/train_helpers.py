import os
import subprocess
import sys

from ratlm.train import recipe as rc

# a model and batch small enough for a few steps in about a second
TINY = dict(model="rat-tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, chunk_size=4, seq_len=32,
            batch_size=4, micro_batch_size=2, max_steps=4, eval_every=2, save_every=2, eval_batches=2, log_every=1,
            progress="false", lr="3e-3", threads=1, tokenizer="byte")


def tiny_recipe(**kw):
    """A resolved tiny-rat recipe with TINY settings and `kw` on top."""
    return rc.load("tiny-rat", {**TINY, **kw})


def tiny_args(**kw):
    """The command-line form of tiny_recipe(**kw) (a key given as None is left out)."""
    args = []
    for k, v in {**TINY, **kw}.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def run_cli(args, env=None, timeout=300):
    """`python -m ratlm ARGS` in a subprocess (this checkout first on the path)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    e = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "ratlm", *args], capture_output=True, text=True, env=e,
                          timeout=timeout)
