"""Checkpoints of a run: weights, optimizer state and run state of one epoch, committed at once.

Each checkpoint is a folder ``<backup>/epoch-NNNN/`` holding ``state.weights.h5`` (everything
``Model.save_weights`` saves, the optimizer's variables included) and ``state.json`` (the epoch,
the per-epoch history, best top-1, wall time, and the SHA-256 of the weights file). It is
written as ``.epoch-NNNN.tmp-<pid>/`` and renamed into place, so a kill leaves either the whole
checkpoint or none of it: weights and epoch can never disagree. The two newest checkpoints are
kept; a reader verifies the checksum and falls back to the older one, saying so, when the newest
is unreadable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from keras_gdkd.runs.files import fsync_dir

WEIGHTS_NAME = "state.weights.h5"
STATE_NAME = "state.json"
FORMAT_VERSION = 1
_SLOT = re.compile(r"^epoch-(\d{4,})$")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be trusted (missing file, bad checksum, bad JSON)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: ``epoch`` epochs are finished; ``state`` is the run state."""

    path: Path
    epoch: int
    state: dict[str, Any]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME


class CheckpointStore:
    """The checkpoints of one run in ``folder`` (created on first commit).

    Args:
        folder: where the ``epoch-NNNN`` checkpoint folders live.
        keep: how many of the newest checkpoints to keep (at least 2, so one bad write or a
            damaged file never leaves the run without a good state).
    """

    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        if keep < 2:
            raise ValueError(f"keep must be >= 2 (a fallback must remain); got {keep}.")
        self.folder = Path(folder)
        self.keep = keep

    def slots(self) -> list[tuple[int, Path]]:
        """(epoch, folder) of every committed checkpoint, newest first (unverified)."""
        if not self.folder.is_dir():
            return []
        found = []
        for child in self.folder.iterdir():
            match = _SLOT.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
        return sorted(found, reverse=True)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies; ``None`` for a run with none.

        Each unreadable newer checkpoint is reported with ``warnings.warn`` (naming the folder
        and the reason) before falling back to the next. Raises :class:`CheckpointError` when
        checkpoints exist but none verifies.
        """
        problems = []
        for _, path in self.slots():
            try:
                checkpoint = read_checkpoint(path)
            except CheckpointError as error:
                problems.append(str(error))
                warnings.warn(f"Ignoring a damaged checkpoint: {error}", stacklevel=2)
                continue
            if problems:
                warnings.warn(f"Resuming from the previous good checkpoint {path}.", stacklevel=2)
            return checkpoint
        if problems:
            raise CheckpointError(
                "no usable checkpoint in " + str(self.folder) + ": " + "; ".join(problems)
            )
        return None

    def commit(self, model: Any, epoch: int, state: dict[str, Any]) -> Checkpoint:
        """Saves ``model``'s weights (and optimizer) with ``state`` as the checkpoint of ``epoch``.

        Args:
            model: a built ``keras.Model`` (its ``save_weights`` is used).
            epoch: the number of finished epochs this state represents.
            state: JSON-serialisable run state (no NaN).

        Returns:
            The committed :class:`Checkpoint`. Older checkpoints beyond ``keep`` are removed.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"epoch-{epoch:04d}"
        tmp = self.folder / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            model.save_weights(tmp / WEIGHTS_NAME)
            _fsync_file(tmp / WEIGHTS_NAME)
            record = {
                "format": FORMAT_VERSION,
                "epoch": int(epoch),
                "weights_sha256": _sha256(tmp / WEIGHTS_NAME),
                "state": state,
            }
            (tmp / STATE_NAME).write_text(json.dumps(record, indent=1, allow_nan=False))
            _fsync_file(tmp / STATE_NAME)
            fsync_dir(tmp)
            if final.exists():  # the same epoch trained again after a crash: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.folder)
        self._prune()
        return Checkpoint(final, int(epoch), state)

    def clean_temporaries(self) -> None:
        """Removes half-written checkpoints left by a killed process."""
        if self.folder.is_dir():
            for child in self.folder.glob(".epoch-*.tmp-*"):
                shutil.rmtree(child, ignore_errors=True)

    def _prune(self) -> None:
        for _, path in self.slots()[self.keep :]:
            shutil.rmtree(path, ignore_errors=True)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads and verifies one checkpoint folder; raises :class:`CheckpointError` if damaged."""
    path = Path(path)
    state_file, weights = path / STATE_NAME, path / WEIGHTS_NAME
    try:
        record = json.loads(state_file.read_text())
        epoch = int(record["epoch"])
        expected = record["weights_sha256"]
        state = record["state"]
    except FileNotFoundError:
        raise CheckpointError(f"{state_file} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{state_file} is unreadable ({error})") from None
    match = _SLOT.match(path.name)
    if match and int(match.group(1)) != epoch:
        raise CheckpointError(f"{state_file} records epoch {epoch}, not {int(match.group(1))}")
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    if _sha256(weights) != expected:
        raise CheckpointError(f"{weights} does not match its checksum (truncated or damaged)")
    return Checkpoint(path, epoch, state)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb+") as f:
        os.fsync(f.fileno())
