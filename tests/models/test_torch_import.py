"""load_torch_weights: key mapping, strictness, containers, bad files, .pth/.keras round trips."""

from __future__ import annotations

import sys
import warnings

import keras
import numpy as np
import pytest

from keras_gdkd.models import get_model, load_torch_weights, torch_key_table


def _fake_state_dict(model: keras.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in PyTorch layout for every key the model expects."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, slot in torch_key_table(model).items():
        value = rng.normal(size=slot.torch_shape).astype("float32")
        state[key] = np.abs(value) + 0.1 if key.endswith("running_var") else value
    return state


def infer(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eval-mode outputs; compiled once on JAX, where eager op-by-op dispatch is slow."""
    if keras.backend.backend() == "jax":
        return keras.ops.convert_to_numpy(model.predict_on_batch(x))
    return keras.ops.convert_to_numpy(model(x, training=False))


def _np(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable.value)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [_np(w) for w in model.weights]


@pytest.fixture
def resnet8():
    return get_model("resnet8", num_classes=10)


def test_layouts(resnet8):
    state = _fake_state_dict(resnet8)
    report = load_torch_weights(resnet8, state)
    assert len(report.loaded) == len(state) and not report.missing
    conv = resnet8.get_layer("layer2_0_conv1").kernel
    np.testing.assert_array_equal(_np(conv), state["layer2.0.conv1.weight"].transpose(2, 3, 1, 0))
    fc = _np(resnet8.get_layer("fc").kernel)
    np.testing.assert_array_equal(fc, state["fc.weight"].T)
    bn = resnet8.get_layer("layer2_0_downsample_1")
    np.testing.assert_array_equal(
        _np(bn.moving_variance), state["layer2.0.downsample.1.running_var"]
    )


def test_depthwise_and_grouped_layouts():
    model = get_model("shufflenetv1", num_classes=10)
    table = torch_key_table(model)
    assert table["layer1.0.conv2.weight"].torch_shape == (54, 1, 3, 3)  # depthwise
    assert table["layer2.0.conv1.weight"].torch_shape == (60, 80, 1, 1)  # groups=3
    state = _fake_state_dict(model)
    load_torch_weights(model, state)
    dw = _np(model.get_layer("layer1_0_conv2").kernel)
    np.testing.assert_array_equal(dw, state["layer1.0.conv2.weight"].transpose(2, 3, 0, 1))


def test_strict_errors_name_every_problem(resnet8):
    state = _fake_state_dict(resnet8)
    del state["layer1.0.bn2.running_mean"]
    state["layer9.0.conv1.weight"] = np.zeros((3, 3), "float32")
    state["fc.weight"] = np.zeros((11, 64), "float32")
    before = _weights(resnet8)
    with pytest.raises(ValueError) as info:
        load_torch_weights(resnet8, state)
    message = str(info.value)
    assert "missing keys (1)" in message
    assert "layer1.0.bn2.running_mean (expected shape (16,))" in message
    assert "unexpected keys (1)" in message and "layer9.0.conv1.weight (3, 3)" in message
    assert "fc.weight: checkpoint (11, 64), model expects (10, 64)" in message
    # strict failure assigns nothing
    for a, b in zip(before, _weights(resnet8), strict=True):
        np.testing.assert_array_equal(a, b)

    report = load_torch_weights(resnet8, state, strict=False)
    assert report.missing == ["layer1.0.bn2.running_mean"]
    assert report.unexpected == ["layer9.0.conv1.weight"]
    assert len(report.mismatched) == 1
    assert "fc.weight" not in report.loaded and "fc.bias" in report.loaded
    np.testing.assert_array_equal(
        _np(resnet8.get_layer("layer1_0_conv1").kernel),
        state["layer1.0.conv1.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_containers_and_module_prefix(resnet8, wrapper):
    state = _fake_state_dict(resnet8)
    state = {f"module.{k}": v for k, v in state.items()}
    state["module.bn1.num_batches_tracked"] = np.array(7)
    source = state if wrapper is None else {wrapper: state, "epoch": 240}
    report = load_torch_weights(resnet8, source)
    assert report.ignored == ["bn1.num_batches_tracked"]
    assert not (report.missing or report.unexpected or report.mismatched)


def test_npz_ignores_dunder_entries(resnet8, tmp_path):
    state = _fake_state_dict(resnet8)
    path = tmp_path / "weights.npz"
    np.savez(path, __input__=np.zeros((1, 32, 32, 3), "float32"), **state)
    assert len(load_torch_weights(resnet8, path).loaded) == len(state)


def test_pth_round_trip(resnet8, tmp_path):
    torch = pytest.importorskip("torch")
    state = _fake_state_dict(resnet8)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    tensors["bn1.num_batches_tracked"] = torch.tensor(3)
    tensors["fc.bias"] = tensors["fc.bias"].to(torch.bfloat16)  # NumPy has no bfloat16
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": tensors, "epoch": 240, "best_acc": torch.tensor(79.4)}, path)
    report = load_torch_weights(resnet8, str(path))
    assert len(report.loaded) == len(state)
    np.testing.assert_array_equal(_np(resnet8.get_layer("bn1").gamma), state["bn1.weight"])
    np.testing.assert_array_equal(
        _np(resnet8.get_layer("fc").bias), tensors["fc.bias"].float().numpy()
    )


def test_pth_without_torch_says_how_to_fix(resnet8, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    path = tmp_path / "ckpt.pth"
    path.write_bytes(b"PK\x03\x04" + bytes(60))  # what torch.save writes first
    with pytest.raises(ImportError, match="pip install torch"):
        load_torch_weights(resnet8, path)


def test_keras_round_trip(resnet8, tmp_path):
    load_torch_weights(resnet8, _fake_state_dict(resnet8))
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = infer(resnet8, x)
    path = tmp_path / "resnet8.keras"
    resnet8.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(infer(reloaded, x), expected, atol=1e-5)


def test_non_strict_partial_load_warns_with_the_summary(resnet8):
    state = _fake_state_dict(resnet8)
    total = len(state)
    state["fc.weight"] = np.zeros((11, 64), "float32")  # another number of classes
    del state["fc.bias"]
    state["head.weight"] = np.zeros((3,), "float32")
    with pytest.warns(UserWarning) as caught:
        report = load_torch_weights(resnet8, state, strict=False)
    message = str(caught[0].message)
    assert f"{total - 2} of {total} model tensors loaded" in message
    assert "missing 1, unexpected 1, shape mismatches 1" in message
    assert "'fc.bias'" in message and "'head.weight'" in message and "fc.weight" in message
    assert len(report.loaded) == total - 2


def test_non_strict_load_of_nothing_warns(resnet8):
    state = {f"backbone.{k}": v for k, v in _fake_state_dict(resnet8).items()}
    with pytest.warns(UserWarning, match=f"0 of {len(state)} model tensors loaded"):
        report = load_torch_weights(resnet8, state, strict=False)
    assert not report.loaded


def test_complete_non_strict_load_is_silent(resnet8):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_torch_weights(resnet8, _fake_state_dict(resnet8), strict=False)


def test_wrong_keys_name_expected_and_found(resnet8):
    state = {"features.0.weight": np.zeros((64, 3, 3, 3), "float32")}
    with pytest.raises(ValueError) as info:
        load_torch_weights(resnet8, state)
    message = str(info.value)
    assert "no key matches" in message
    assert "expects keys like 'conv1.weight'" in message
    assert "the checkpoint has 'features.0.weight'" in message


def test_unknown_wrapper_is_named(resnet8):
    state = {"net": _fake_state_dict(resnet8), "epoch": 240}
    with pytest.raises(ValueError, match="entry 'net' of the state dict is a dict, not a tensor"):
        load_torch_weights(resnet8, state)


NOT_CHECKPOINTS = {
    "empty": b"",
    "html": b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>",
    "random": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "text": b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1234\n",
}


@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_not_a_checkpoint_needs_no_torch_to_be_rejected(resnet8, tmp_path, monkeypatch, kind):
    content = NOT_CHECKPOINTS[kind]
    assert content[:1] != b"\x80" and not content.startswith(b"PK")
    monkeypatch.setitem(sys.modules, "torch", None)  # rejected before torch is imported
    path = tmp_path / "ckpt_epoch_240.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"not a PyTorch checkpoint: {path}") as info:
        load_torch_weights(resnet8, path)
    assert "weights_only" not in str(info.value)
    if kind == "html":
        assert "HTML page" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated zip", "garbage after zip magic", "bad pickle"])
def test_damaged_checkpoint_is_not_a_checkpoint(resnet8, tmp_path, damage):
    torch = pytest.importorskip("torch")
    path = tmp_path / "ckpt.pth"
    if damage == "truncated zip":
        torch.save({k: torch.from_numpy(v) for k, v in _fake_state_dict(resnet8).items()}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "garbage after zip magic":
        path.write_bytes(b"PK\x03\x04" + NOT_CHECKPOINTS["random"])
    else:
        path.write_bytes(b"\x80\x02" + NOT_CHECKPOINTS["random"])
    with pytest.raises(ValueError, match=f"not a PyTorch checkpoint: {path}") as info:
        load_torch_weights(resnet8, path)
    assert "weights_only" not in str(info.value)


def test_pickled_objects_suggest_weights_only_false(resnet8, tmp_path):
    torch = pytest.importorskip("torch")
    import argparse

    path = tmp_path / "ckpt.pth"
    tensors = {k: torch.from_numpy(v) for k, v in _fake_state_dict(resnet8).items()}
    torch.save({"model": tensors, "args": argparse.Namespace(lr=0.05)}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        load_torch_weights(resnet8, path)


def test_a_checkpoint_that_is_not_a_state_dict(resnet8, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="expected a state dict .* got Tensor"):
        load_torch_weights(resnet8, path)
