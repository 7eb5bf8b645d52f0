"""Checkpoints: one rename per epoch, two kept, verified on read, a fallback when damaged."""

import json
import os

import keras
import numpy as np
import pytest

from keras_gdkd.runs import checkpoint as ckpt
from keras_gdkd.runs.checkpoint import CheckpointError, CheckpointStore


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)  # optimizer state exists
    return model


def _state(epoch):
    return {"history": [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(epoch)]}


def test_commit_keeps_the_two_newest_and_restores_weights_and_optimizer(tmp_path):
    model = _model()
    store = CheckpointStore(tmp_path / "backup")
    for epoch in (1, 2, 3):
        model.layers[0].kernel.assign(np.full((3, 2), float(epoch), "float32"))
        store.commit(model, epoch, _state(epoch))
    assert [e for e, _ in store.slots()] == [3, 2]
    latest = store.latest()
    assert latest.epoch == 3 and latest.state == _state(3)
    other = _model(seed=1)
    other.load_weights(latest.weights_path)
    np.testing.assert_array_equal(other.layers[0].kernel.numpy(), np.full((3, 2), 3.0))
    for a, b in zip(model.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("damage", ["truncate_weights", "empty_state", "drop_state", "bad_epoch"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    model, store = _model(), CheckpointStore(tmp_path)
    store.commit(model, 1, _state(1))
    newest = store.commit(model, 2, _state(2)).path
    weights, state = newest / ckpt.WEIGHTS_NAME, newest / ckpt.STATE_NAME
    if damage == "truncate_weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "empty_state":
        state.write_text("")
    elif damage == "drop_state":
        state.unlink()
    else:
        record = json.loads(state.read_text())
        state.write_text(json.dumps({**record, "epoch": 7}))
    with pytest.warns(UserWarning, match=str(newest)):
        latest = store.latest()
    assert latest.epoch == 1


def test_no_usable_checkpoint_is_an_error_naming_the_folder(tmp_path):
    model, store = _model(), CheckpointStore(tmp_path)
    path = store.commit(model, 1, _state(1)).path
    (path / ckpt.WEIGHTS_NAME).write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=str(tmp_path)):
        store.latest()


def test_a_kill_before_the_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, store = _model(), CheckpointStore(tmp_path)
    store.commit(model, 1, _state(1))

    def killed(*args):
        raise KeyboardInterrupt  # what a signal does between two lines

    monkeypatch.setattr(ckpt.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.commit(model, 2, _state(2))
    monkeypatch.undo()
    assert store.latest().epoch == 1
    assert not list(tmp_path.glob(".epoch-*"))  # the half-written folder is gone


def test_a_kill_during_save_weights_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, store = _model(), CheckpointStore(tmp_path)
    store.commit(model, 1, _state(1))

    def half_written(path):
        open(path, "wb").write(b"\x89HDF partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", half_written)
    with pytest.raises(KeyboardInterrupt):
        store.commit(model, 2, _state(2))
    assert store.latest().epoch == 1


def test_a_folder_left_by_a_killed_process_is_ignored_and_cleaned(tmp_path):
    model, store = _model(), CheckpointStore(tmp_path)
    store.commit(model, 1, _state(1))
    leftover = tmp_path / f".epoch-0002.tmp-{os.getpid() + 1}"
    leftover.mkdir()
    (leftover / ckpt.WEIGHTS_NAME).write_bytes(b"partial")
    assert store.latest().epoch == 1
    store.clean_temporaries()
    assert not leftover.exists()


def test_the_same_epoch_committed_again_replaces_it(tmp_path):
    model, store = _model(), CheckpointStore(tmp_path)
    store.commit(model, 1, _state(1))
    store.commit(model, 1, {"history": [], "again": True})
    assert store.latest().state["again"] is True


def test_keep_below_two_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 2"):
        CheckpointStore(tmp_path, keep=1)
