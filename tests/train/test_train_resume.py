"""Checkpoints: atomic saves, keep-last-N, and a run killed with SIGKILL then resumed reaching bit-identical
weights to a run that was never interrupted."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import run_cli, tiny_args

from ratlm.train import checkpoint as ck

STEPS = 6


def cli_args(data, out, **kw):
    # one thread in every run, so that the float operations are the same
    return ["train", *tiny_args(data=data, out=out, max_steps=STEPS, threads=1, **kw)]


def start_and_kill(args, where, step, out):
    """Run (through hang_run.py) until it marks `step` at `where`, then SIGKILL the process."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, os.path.join(here, "hang_run.py"), where, str(step), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = os.path.join(out, "checkpoints", f"hang-{step}")
    deadline = time.time() + 240
    while not os.path.exists(marker):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the run did not reach the test hook in time")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.remove(marker)


def weights(out):
    return load_file(os.path.join(out, "model", "model.safetensors"))


def assert_bit_identical(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa = ck.load(ck.latest(os.path.join(a, "checkpoints")))
    sb = ck.load(ck.latest(os.path.join(b, "checkpoints")))
    for p, state in sa["optimizer"]["state"].items():
        for name, t in state.items():
            assert torch.equal(t, sb["optimizer"]["state"][p][name]), (p, name)
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == STEPS


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    from helpers import write_corpus

    data = str(write_corpus(tmp / "src"))
    out = str(tmp / "straight")
    res = run_cli(cli_args(data, out))
    assert res.returncode == 0, res.stderr[-3000:]
    return data, out


@pytest.mark.slow
def test_sigkill_between_steps_then_resume_is_bit_identical(tmp_path, uninterrupted):
    data, straight = uninterrupted
    out = str(tmp_path / "killed")
    start_and_kill(cli_args(data, out), "after-save", 2, out)
    assert [s for s, _ in ck.list_checkpoints(os.path.join(out, "checkpoints"))] == [2]
    # the same command again, with --resume auto
    res = run_cli(cli_args(data, out, resume="auto"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stderr and "step 2" in res.stderr
    assert_bit_identical(straight, out)
    # metrics were not duplicated by the restart
    steps = [line for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line]
    assert len(steps) == STEPS


@pytest.mark.slow
def test_crash_in_the_middle_of_a_save_keeps_the_last_good_checkpoint(tmp_path, uninterrupted):
    data, straight = uninterrupted
    out = str(tmp_path / "crashed")
    start_and_kill(cli_args(data, out), "in-save", 4, out)
    folder = os.path.join(out, "checkpoints")
    assert os.path.exists(os.path.join(folder, ".step-00000004.pt.tmp"))  # the half-done save
    assert [s for s, _ in ck.list_checkpoints(folder)] == [2]
    assert ck.load(ck.latest(folder))["step"] == 2
    res = run_cli(cli_args(data, out, resume="auto"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not any(f.endswith(".tmp") for f in os.listdir(folder))
    assert_bit_identical(straight, out)


def test_atomic_save_and_keep_last(tmp_path, monkeypatch):
    folder = str(tmp_path / "ck")
    for step in (1, 2, 3):
        ck.save(folder, step, {"step": step, "w": torch.full((3,), float(step))}, keep_last=2)
    assert [s for s, _ in ck.list_checkpoints(folder)] == [2, 3]

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save(folder, 4, {"step": 4}, keep_last=2)
    assert [s for s, _ in ck.list_checkpoints(folder)] == [2, 3]  # nothing lost, nothing half-written in place
    assert torch.equal(ck.load(ck.latest(folder))["w"], torch.full((3,), 3.0))
    ck.clean_temporaries(folder)
    assert sorted(os.listdir(folder)) == ["step-00000002.pt", "step-00000003.pt"]


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    torch.save({"rng": ck.rng_state()}, tmp_path / "rng.pt")
    a = (random.random(), np.random.rand(), torch.rand(1))
    ck.set_rng_state(ck.load(tmp_path / "rng.pt")["rng"])  # weights_only=True can read it
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
