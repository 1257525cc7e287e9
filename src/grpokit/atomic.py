"""Atomic file writes: write a sibling temporary file, then rename it over the target, so a crash
mid-write leaves the previous file (or none), never a truncated one. A write that fails (a full
disk, no permission) removes its temporary file and leaves the target as it was."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "check_writable", "json_safe"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data) -> Path:
    """``data`` as strict JSON: a NaN or infinite number (which JSON cannot hold) is written as null."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False))


def json_safe(data):
    """``data`` with every NaN / inf float (also numpy scalars) replaced by None, recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    if hasattr(data, "item") and hasattr(data, "dtype") and getattr(data, "ndim", 1) == 0:
        return json_safe(data.item())
    return data


def check_writable(folder: str | Path, what: str = "the output folder") -> Path:
    """Make ``folder`` (and its parents) and prove a file can be written there, before any work is done.

    Raises ``OSError`` subclasses (``PermissionError``, a full disk) with a message naming the folder."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{what} {folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".grpokit-write-check.", dir=folder)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(name)
    except NotADirectoryError:
        raise
    except OSError as err:
        raise type(err)(err.errno, f"cannot write to {what} {folder}: {err.strerror or err}") from None
    return folder
