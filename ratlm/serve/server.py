"""Running the app: uvicorn with a graceful SIGTERM/SIGINT (stop admitting, let in-flight requests
finish for `grace` seconds, cancel what is left, exit cleanly)."""
from __future__ import annotations

import signal
import sys
import threading

import uvicorn


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
