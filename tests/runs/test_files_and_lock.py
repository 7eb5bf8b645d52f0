"""Atomic writes and the run lock."""

import json
import os
import subprocess
import sys
import time

import pytest

from keras_gdkd.runs import RunError, RunLock, atomic_path, atomic_write_json, files, read_json
from keras_gdkd.runs.config import config_differences


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"a": ')
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_kill_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        assert tmp.name.endswith(".keras")  # writers that check the extension accept it
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"


def test_atomic_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"top1": float("nan")})
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("content", ["", "{", "[1, 2"])
def test_read_json_names_the_file(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(ValueError, match="run.json is not readable JSON"):
        read_json(tmp_path / "run.json")


HOLD = """
import sys, time
from keras_gdkd.runs import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_is_refused_with_the_holders_pid_and_host(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=f"in use by another run \\(pid {holder.pid} on host"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed without releasing: the lock is stale and taken over.
    lock = RunLock(tmp_path).acquire()
    assert lock.took_over["pid"] == holder.pid
    lock.release()
    with RunLock(tmp_path) as again:
        assert again.took_over is None  # a clean release leaves nothing to take over
    assert json.loads((tmp_path / "run.lock").read_text() or "{}") == {}


def test_the_lock_records_this_process(tmp_path):
    with RunLock(tmp_path):
        record = json.loads((tmp_path / "run.lock").read_text())
        assert record["pid"] == os.getpid() and record["started"] <= time.time()


def test_config_differences_lists_every_changed_key_but_not_versions():
    started = {"preset": {"learning_rate": 0.05, "method": "gdkd"}, "versions": {"keras": "3.1"}}
    now = {"preset": {"learning_rate": 0.1, "method": "kd"}, "versions": {"keras": "3.2"}}
    assert config_differences(started, now) == [
        "preset.learning_rate: 0.05 at the first start, 0.1 now",
        "preset.method: gdkd at the first start, kd now",
    ]
    assert config_differences(started, started) == []
