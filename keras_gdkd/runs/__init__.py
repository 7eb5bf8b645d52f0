"""The life of a training run on disk: atomic files, the run lock, checkpoints, the config record.

A run folder must survive a kill, a full disk or a corrupt file at any line: every file is
written to a temporary name and renamed, the two newest checkpoints are kept and verified
before use, one process at a time owns the folder, and a resume whose configuration differs
from the first start is refused.
"""

from keras_gdkd.runs.checkpoint import Checkpoint, CheckpointStore
from keras_gdkd.runs.config import config_differences
from keras_gdkd.runs.errors import RunError
from keras_gdkd.runs.files import atomic_path, atomic_write_json, atomic_write_text, read_json
from keras_gdkd.runs.lock import RunLock

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "RunError",
    "RunLock",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "config_differences",
    "read_json",
]
