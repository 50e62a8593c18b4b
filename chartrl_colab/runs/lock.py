"""One writer per run directory: a lock that a dead process does not hold.

``{run_dir}/.lock`` is ``flock``-ed through filelock's ``UnixFileLock`` (the kernel drops it when its process
dies, SIGKILL included) and names the writer (process id, machine, start time); released, it is an empty file.
A writer on another machine (Drive seen from a second Colab runtime) holds no ``flock`` we can see: it touches
the file every :data:`HEARTBEAT` seconds and its lock lapses :data:`STALE_AFTER` seconds after the last touch.
That part stays ours: filelock's ``SoftFileLease`` admits a contender only after watching the lease unchanged
for a whole lease, so a fresh runtime could not take over two minutes after the last heartbeat (README).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import filelock

from chartrl_colab.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
HEARTBEAT = 30.0
STALE_AFTER = 120.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"
    return f"process {holder['pid']} on {holder.get('host', '?')} (started {holder.get('started', '?')})"


class RunLock:
    """``with RunLock(run_dir):`` the caller is the run's one writer, or ConfigError names the other one."""

    def __init__(self, run_dir: str | Path, stale_after: float = STALE_AFTER, heartbeat: float = HEARTBEAT):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self._flock: filelock.UnixFileLock | None = None
        self._fd: int | None = None
        self._stop = threading.Event()

    def _busy(self, holder: dict, why: str = "") -> ConfigError:
        return ConfigError(f"run directory {self.run_dir} is in use by {_describe(holder)}{why}; wait for it to "
                           "finish or stop it, or write this run elsewhere (another --output-root)")

    def _lock_file(self) -> bool:
        """Take the ``flock``; False on a file system without one (some FUSE mounts): the contents decide."""
        lock = filelock.UnixFileLock(self.path, timeout=0, preserve_lock_file=True, fallback_to_soft=False,
                                     on_acquired=lambda fd: setattr(self, "_fd", fd))
        try:
            lock.acquire()
        except filelock.Timeout:
            raise self._busy(_holder(self.path)) from None
        except OSError as err:
            if err.errno != errno.ENOSYS:
                raise
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            return False
        self._flock = lock
        return True

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        flocked = self._lock_file()
        holder = _holder(self.path)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        if holder.get("pid") and {k: holder.get(k) for k in me} != me:
            busy = None
            if holder.get("host") != me["host"]:
                age = time.time() - os.stat(self.path).st_mtime
                if age < self.stale_after:
                    busy = self._busy(holder, f", another machine, last seen {age:.0f} s ago (if that machine is "
                                              f"gone, its lock lapses {self.stale_after - age:.0f} s from now)")
            elif not flocked and _alive(int(holder["pid"])):
                busy = self._busy(holder)
            if busy is not None:
                self._close()
                raise busy
            log.info("%s no longer runs; taking over %s", _describe(holder), self.path)
        record = {**me, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(self._fd)
        self._stop.clear()
        threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True).start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):  # a Drive hiccup: the next beat tries again
                os.utime(self.path)

    def _close(self) -> None:
        if self._flock is not None:
            self._flock.release()  # closes the descriptor, which drops the flock
        elif self._fd is not None:
            os.close(self._fd)
        self._flock = self._fd = None

    def release(self) -> None:
        """Empty the file (a released lock) and drop the ``flock``; the file stays, so no second inode exists."""
        if self._fd is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        self._close()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
