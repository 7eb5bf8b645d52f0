"""One run per folder: an exclusive lock that names its holder and dies with it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from keras_gdkd.runs.errors import RunError

LOCK_NAME = "run.lock"


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`.

    The lock is an ``flock`` on ``<folder>/run.lock``: the kernel drops it when the holder
    exits, however it exits, so a lock left by a killed run is stale by construction and the
    next run takes it over (and says so). The file records the holder's pid, host and start
    time, which the refusal message of a second run quotes.

    Args:
        folder: the run folder (must exist).

    Example:
        >>> with RunLock("runs/r8x4"):   # doctest: +SKIP
        ...     train()
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> RunLock:
        """Takes the lock or raises :class:`RunError` naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise RunError(
                f"{self.path.parent} is in use by another run ({holder}).",
                hint="wait for it to finish, stop it, or choose another --output",
            ) from None
        previous = _read_holder(fd)
        if previous:
            self.took_over = previous  # a holder that died without releasing
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clears the holder record and drops the lock (also done by the kernel at exit)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {started}"
