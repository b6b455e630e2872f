"""Running the app: uvicorn with a graceful SIGTERM/SIGINT (stop admitting, let in-flight requests
finish for `grace` seconds, cancel what is left, exit cleanly)."""
from __future__ import annotations

import re
import signal
import sys
import threading

import uvicorn

from ..errors import UserError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'4GiB', '512MiB', '1.5GB', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise UserError(f"cannot read {text!r} as a size; write e.g. 4GiB, 512MiB, 2GB or a number of bytes")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise UserError(f"a size must be positive, got {text!r}")
    return n


class GracefulServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: the engine admits nothing new, in-flight requests have `grace`
    seconds to finish, then are cancelled; uvicorn closes the listener and waits for the responses."""

    def __init__(self, config, engine, grace: float):
        super().__init__(config)
        self.engine, self.grace = engine, grace
        self._draining = False

    def handle_exit(self, sig, frame):
        if not self._draining:
            self._draining = True
            self.engine.drain()
            print(f"ratlm serve: shutting down: finishing in-flight requests (up to {self.grace:g} s)",
                  file=sys.stderr, flush=True)
            timer = threading.Timer(self.grace, self.engine.cancel_all)
            timer.daemon = True
            timer.start()
        # as uvicorn's, but the signal is not re-raised on the way out: a drained server exits 0
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def run_server(app, engine, host: str = "127.0.0.1", port: int = 8000, grace: float = 10.0,
               log_level: str = "warning") -> None:
    """Serve until SIGTERM/SIGINT; the engine's thread is started here and stopped on the way out."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=int(grace) + 2, lifespan="off")
    server = GracefulServer(config, engine, grace)
    engine.start()
    try:
        server.run()
    finally:
        engine.shutdown()
