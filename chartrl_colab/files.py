"""Files as other tools save them, and files written whole or not at all.

Every JSON file the package reads goes through :func:`read_json` or :func:`json_line`, which drop a UTF-8
byte-order mark (Windows Notepad, Excel's "CSV UTF-8", some Drive exports) and take CRLF line ends: a file a
person opened and saved again reads as before.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json", "json_line", "atomic_path", "naming", "file_in_the_way", "BOM"]

BOM = b"\xef\xbb\xbf"


def json_line(data: bytes | str) -> Any:
    """One JSON document (a file's text or one JSONL line), with a leading byte-order mark and CR/LF line ends
    allowed. Raises ``ValueError`` (``json.JSONDecodeError`` or ``UnicodeDecodeError``) when it does not parse."""
    if isinstance(data, bytes):
        data = data.removeprefix(BOM).decode("utf-8")
    return json.loads(data.removeprefix("\ufeff"))


def read_json(path: str | Path) -> Any:
    """The parsed JSON file at ``path`` (see :func:`json_line`); ``OSError`` when it cannot be read,
    ``ValueError`` when it does not parse."""
    return json_line(Path(path).read_bytes())


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """``with atomic_path(target) as tmp: write to tmp``: ``tmp`` is renamed over ``target`` when the block
    ends without an error, and removed when it raises (a full disk leaves no partial file under either name).
    The temporary name keeps ``target``'s suffix, so writers that pick a format from it (matplotlib) still do.
    An ``OSError`` that names no file (a write or flush on a full disk) is raised again naming ``target``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        with naming(path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def naming(path: str | Path):
    """Raise an ``OSError`` of the block that names no file (or a temporary one) again naming ``path``, so the
    one line a CLI prints for a full disk says where."""
    try:
        yield
    except OSError as err:
        if err.errno is not None and (err.filename is None or Path(str(err.filename)).name.startswith(".")):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def file_in_the_way(folder: str | Path) -> Path | None:
    """The part of ``folder`` (itself or a parent) that exists and is not a folder, else None: a folder there
    cannot be made (``NotADirectoryError`` / ``FileExistsError`` deep inside a writer)."""
    folder = Path(folder).expanduser()
    return next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
