"""Helpers of the serving tests: free ports, waiting for a server, the app on uvicorn in a thread."""
import socket
import threading
import time

import torch

EOS, PAD = 258, 256  # the byte tokenizer's end-of-sequence and padding ids


def reference(model, prompt_ids, n):
    """The greedy continuation of one prompt alone, through model.generate: what a served request must return."""
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    return out[0, len(prompt_ids):].tolist()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, timeout=60.0, headers=None):
    import httpx  # the serve extra: imported here so that the engine's tests run without it

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no server at {url} after {timeout} s")


class ThreadServer:
    """The app on uvicorn in a thread of this process, on a free 127.0.0.1 port."""

    def __init__(self, engine, name="tiny", api_key=None):
        import uvicorn

        from ratlm.serve.app import create_app
        from ratlm.serve.metrics import Metrics

        self.engine = engine
        self.metrics = engine.metrics = Metrics()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(engine, name, api_key=api_key, metrics=self.metrics)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.engine.start()
        self.thread.start()
        wait_healthy(self.url)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.engine.shutdown()
