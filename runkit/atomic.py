"""Atomic file writes: write to a temp file in the same folder, fsync, then rename.

A reader (or a requeued job) therefore sees either the old file or the new one, never a
half-written one. A full disk raises `DiskFullError` naming the file; the old file survives.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


class DiskFullError(OSError):
    """Raised when a write fails because the device is full (ENOSPC / EDQUOT)."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temp file beside `path`; on clean exit fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 - umask)
        # so shared result folders stay readable.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        full = _disk_full_error(exc)
        if full is not None:
            raise DiskFullError(full.errno, f"disk full while writing {path}; the previous "
                                f"version (if any) was kept") from exc
        raise


def _disk_full_error(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error behind `exc`, if any. Writers may wrap it: torch.save's zip
    writer turns it into a RuntimeError ("unexpected pos") with the OSError as its context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _remove_quietly(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[io.IOBase], None]) -> None:
    """Atomic write through a callback that writes into a binary handle (np.save, torch.save)."""
    with atomic_open(path, "wb") as handle:
        writer(handle)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    atomic_write_with(path, lambda handle: torch.save(obj, handle))
