"""`ratlm serve` end to end in a subprocess: options, --api-key, SIGTERM (drain, grace, exit 0)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from models.hf_tiny import tiny_model
from serve_helpers import free_port, wait_healthy

from ratlm.cli import main
from ratlm.data.tokenizer import byte_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    tiny_model("rat-swa").save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return d


def test_bad_options_are_one_line_errors(model_dir, capsys):
    assert main(["serve", str(model_dir), "--cache-memory", "lots"]) == 2
    assert "cannot read 'lots' as a size" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--max-running", "0"]) == 2
    assert "--max-running must be >= 1" in capsys.readouterr().err
    assert main(["serve", str(model_dir) + "-missing", "--port", "1"]) == 2
    assert "no such model" in capsys.readouterr().err


def test_serve_api_key_and_sigterm(model_dir, capsys):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ratlm", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--api-key", "sekrit", "--served-model-name", "tiny", "--max-running", "2", "--max-waiting", "1",
           "--dtype", "float32", "--device", "cpu", "--grace", "2", "--threads", "1", "--prefill-chunk", "16",
           "--max-model-len", "100000", "--tokenizer", str(model_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_healthy(url, timeout=90)
        auth = {"Authorization": "Bearer sekrit"}
        for path in ("/v1/models", "/metrics"):
            r = httpx.get(url + path)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 2})
        assert r.status_code == 401
        assert httpx.get(url + "/v1/models", headers=auth).json()["data"][0]["id"] == "tiny"
        assert httpx.get(url + "/health").status_code == 200
        r = httpx.post(url + "/v1/completions", headers=auth,
                       json={"model": "tiny", "prompt": "ab", "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        # greedy through the server = `ratlm generate` for the same prompt
        capsys.readouterr()
        assert main(["generate", str(model_dir), "def f(x):", "--max-new-tokens", "12", "--quiet"]) == 0
        expected = capsys.readouterr().out.removesuffix("\n")
        r = httpx.post(url + "/v1/completions", headers=auth,
                       json={"model": "tiny", "prompt": "def f(x):", "max_tokens": 12, "temperature": 0})
        assert r.json()["choices"][0]["text"] == expected

        # one long stream in flight, then SIGTERM: it is cancelled after --grace, and the server exits 0
        lines, opened = [], threading.Event()

        def long_stream():
            body = {"model": "tiny", "prompt": "ab", "max_tokens": 90000, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", url + "/v1/completions", headers=auth, json=body, timeout=60) as resp:
                for line in resp.iter_lines():
                    if line:
                        lines.append(line)
                        opened.set()

        t = threading.Thread(target=long_stream, daemon=True)
        t.start()
        assert opened.wait(30)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        took = time.monotonic() - start
        t.join(10)
        assert rc == 0, proc.stderr.read()
        assert took >= 1.5  # the stream had its grace period
        assert lines[-1] == "data: [DONE]"
        assert any('"finish_reason": "cancelled"' in x for x in lines)
        err = proc.stderr.read()
        assert "shutting down" in err and "Traceback" not in err
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
