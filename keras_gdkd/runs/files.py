"""Writes that a kill cannot leave half done: a temporary name in the same folder, then a rename."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries, so a rename in it survives a power cut."""
    with contextlib.suppress(OSError):  # some filesystems cannot open folders
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path``, unique to this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path; on success the file written there replaces ``path`` at once.

    Readers see either the old file or the complete new one, never a partial one. On an
    exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path("run/model.keras") as tmp:   # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    tmp = temporary_name(path)
    if path.suffixes:  # writers such as keras.saving insist on ".keras" or ".weights.h5"
        tmp = tmp.with_name(f"{tmp.name}{''.join(path.suffixes)}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces ``path`` by ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Replaces ``path`` by ``data`` as indented JSON, atomically (NaN is refused)."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; a missing, empty or malformed file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ValueError(f"{path} does not exist") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON ({error})") from error
