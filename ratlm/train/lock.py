"""One training run per folder: `RUN/.lock`, held (flock) for the whole run by the process that writes.

A second run on the same folder refuses at once, naming the holder. The lock goes away with the
process, so a killed run leaves no stale lock behind (the file stays, empty)."""
from __future__ import annotations

import os
import socket
import time

from ..errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None


class RunLock:
    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, ".lock")
        self.fh = None
        self.created = False

    def acquire(self):
        if fcntl is None:
            return self
        self.created = not os.path.exists(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"{self.folder} is in use by another training run ({holder}); wait for it to end, or "
                           "choose another --out or --name") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self.fh = fh
        return self

    def release(self):
        if self.fh is None:
            return
        self.fh.seek(0)
        self.fh.truncate()
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        self.fh = None
        # a run that failed before writing anything leaves no folder behind
        if self.created and os.listdir(self.folder) == [".lock"]:
            os.remove(self.path)
            os.rmdir(self.folder)
