"""One writer per run directory: a lock that a dead process does not hold.

``{run_dir}/.lock`` holds who writes the run (process id, machine, start time) and is ``flock``-ed by that
process while it runs. The kernel drops an ``flock`` when its process dies, SIGKILL included, so a killed run
leaves no lock behind on its machine. A writer on another machine (Drive seen from a second Colab runtime)
cannot be asked whether it is alive: while it runs it refreshes the file every :data:`HEARTBEAT` seconds,
and its lock counts as abandoned once the file is older than :data:`STALE_AFTER` seconds (a disconnected
runtime). A released lock is an empty file.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

from chartrl_colab.errors import ConfigError

LOCK_NAME = ".lock"
HEARTBEAT = 30.0
STALE_AFTER = 120.0

try:
    import fcntl
except ImportError:  # not on POSIX: the file's contents alone decide
    fcntl = None


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
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _busy(self, holder: dict, why: str = "") -> ConfigError:
        return ConfigError(f"run directory {self.run_dir} is in use by {_describe(holder)}{why}; wait for it to "
                           "finish or stop it, or write this run elsewhere (another --output-root)")

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        flocked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise self._busy(_holder(self.path)) from None
                # a file system without flock (some FUSE mounts): the contents decide
        holder = _holder(self.path)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        if holder.get("pid") and {k: holder.get(k) for k in me} != me:
            if holder.get("host") == me["host"]:
                if not flocked and _alive(int(holder["pid"])):
                    os.close(fd)
                    raise self._busy(holder)
            else:
                age = time.time() - os.stat(self.path).st_mtime
                if age < self.stale_after:
                    os.close(fd)
                    raise self._busy(holder, f", another machine, last seen {age:.0f} s ago (if that machine is "
                                             f"gone, its lock lapses {self.stale_after - age:.0f} s from now)")
            print(f"note: {_describe(holder)} no longer runs; taking over {self.path}")
        record = {**me, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                pass  # Drive hiccup: the next beat tries again

    def release(self) -> None:
        """Empty the file (a released lock) and drop the ``flock``; the file stays, so no second inode exists."""
        if self._fd is None:
            return
        self._stop.set()
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
