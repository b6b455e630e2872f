"""Several processes (torchrun, gloo on CPU): DDP and FSDP match one process with the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import tiny_args, tiny_recipe

from ratlm.train.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = dict(batch_size=4, micro_batch_size=1, max_steps=3, save_every=2, eval_every=3)


def torchrun(args, nproc=2):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "ratlm", "train", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def weights(out):
    return load_file(os.path.join(out, "model", "model.safetensors"))


def losses(out):
    return [json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line]


def assert_close_runs(a, b):
    wa, wb = weights(a), weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    assert losses(a) == pytest.approx(losses(b), rel=1e-5)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    from helpers import write_corpus

    tmp = tmp_path_factory.mktemp("ddp")
    data = str(write_corpus(tmp / "src"))
    # one process: the global batch of 4 rows as 4 accumulation steps
    train(tiny_recipe(data=data, out=str(tmp / "single"), **SETTINGS))
    return data, str(tmp / "single")


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path, single):
    data, one = single
    res = torchrun(tiny_args(data=data, out=tmp_path / "ddp", **SETTINGS))
    assert "2 process(es)" in res.stderr and "2 accumulation step(s)" in res.stderr
    assert_close_runs(one, tmp_path / "ddp")


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume(tmp_path, single):
    data, one = single
    res = torchrun(tiny_args(data=data, out=tmp_path / "fsdp", fsdp="true", **SETTINGS))
    assert "FSDP" in res.stderr
    assert_close_runs(one, tmp_path / "fsdp")
    # FSDP resumes from its (full-state) checkpoint of step 2
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step-00000002.pt"
    torchrun(tiny_args(data=data, out=tmp_path / "again", fsdp="true", resume=ckpt, **SETTINGS))
    wa, wb = weights(tmp_path / "fsdp"), weights(tmp_path / "again")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-7, msg=k)
