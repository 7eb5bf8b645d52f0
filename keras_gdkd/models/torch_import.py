"""Load PyTorch ``state_dict`` weights into the zoo's Keras models.

The zoo names each weight-bearing Keras layer after its torch module path with "." replaced by "_"
(see :mod:`keras_gdkd.models.blocks`), so the port table is derived from the model itself: the
layer ``layer1_0_conv1`` expects ``layer1.0.conv1.weight``. None of the reference module names
contain "_", which makes the rule a bijection (checked at load time).

Layouts: conv ``OIHW`` -> ``HWIO`` (grouped convs too: both frameworks split in/out channels into
the same contiguous groups), depthwise ``(C, 1, kh, kw)`` -> ``(kh, kw, C, 1)``, linear
``(out, in)`` -> ``(in, out)``; BatchNorm ``weight/bias/running_mean/running_var`` ->
``gamma/beta/moving_mean/moving_variance``; ``num_batches_tracked`` is ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import warnings
from collections.abc import Callable, Mapping

import keras
import numpy as np

# Checkpoint containers seen in the wild: mdistiller/CRD save {"model": sd, ...}, others use
# {"state_dict": sd, ...}.
_WRAPPER_KEYS = ("model", "state_dict")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_torch_weights` did; ``loaded`` lists the PyTorch keys assigned."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]
    ignored: list[str]

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, shape mismatches {len(self.mismatched)}, "
            f"ignored {len(self.ignored)}"
        )


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One Keras variable and how a torch array maps onto it."""

    variable: keras.Variable
    to_keras: Callable[[np.ndarray], np.ndarray]
    torch_shape: tuple


def _conv_to_keras(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _depthwise_to_keras(w: np.ndarray, multiplier: int) -> np.ndarray:
    # torch output channel c * m + j is Keras (c, j): (C*m, 1, kh, kw) -> (kh, kw, C, m)
    out_channels, _, kh, kw = w.shape
    w = w.reshape(out_channels // multiplier, multiplier, kh, kw)
    return np.transpose(w, (2, 3, 0, 1))


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _layer_slots(layer: keras.Layer) -> dict[str, _Slot]:
    """torch parameter name (``weight``, ``running_var``...) -> slot, for one Keras layer."""
    slots: dict[str, _Slot] = {}
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = layer.kernel.shape
        slots["weight"] = _Slot(
            layer.kernel, functools.partial(_depthwise_to_keras, multiplier=m), (c * m, 1, kh, kw)
        )
    elif isinstance(layer, keras.layers.Conv2D):
        kh, kw, i, o = layer.kernel.shape
        slots["weight"] = _Slot(layer.kernel, _conv_to_keras, (o, i, kh, kw))
    elif isinstance(layer, keras.layers.Dense):
        i, o = layer.kernel.shape
        slots["weight"] = _Slot(layer.kernel, np.transpose, (o, i))
    elif isinstance(layer, keras.layers.BatchNormalization):
        for torch_name, var in (
            ("weight", layer.gamma),
            ("bias", layer.beta),
            ("running_mean", layer.moving_mean),
            ("running_var", layer.moving_variance),
        ):
            if var is not None:
                slots[torch_name] = _Slot(var, _identity, tuple(var.shape))
        return slots
    else:
        if layer.weights:
            raise TypeError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights but no torch mapping"
            )
        return slots
    if getattr(layer, "use_bias", False):
        slots["bias"] = _Slot(layer.bias, _identity, tuple(layer.bias.shape))
    return slots


def torch_key_table(model: keras.Model) -> dict[str, _Slot]:
    """PyTorch state-dict key -> Keras variable slot for every weight of ``model``."""
    table: dict[str, _Slot] = {}
    owners: dict[str, str] = {}
    for layer in model.layers:
        prefix = layer.name.replace("_", ".")
        if prefix in owners:
            raise ValueError(
                f"layers {owners[prefix]!r} and {layer.name!r} map to the same torch module "
                f"{prefix!r}"
            )
        slots = _layer_slots(layer)
        if slots:
            owners[prefix] = layer.name
        for param, slot in slots.items():
            table[f"{prefix}.{param}"] = slot
    return table


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # NumPy has no bfloat16; half precision checkpoints exist too
        value = value.numpy()
    return np.asarray(value)


# torch.save writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a pickle stream,
# which starts with the PROTO opcode 0x80 followed by the protocol number (2 to 5).
_ZIP_MAGIC = b"PK\x03\x04"


def _not_a_checkpoint(path: str, why: str) -> ValueError:
    return ValueError(f"not a PyTorch checkpoint: {path} ({why})")


def _check_checkpoint_header(path: str) -> None:
    """Rejects files that torch.save cannot have written, before torch reads them."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise _not_a_checkpoint(path, "the file is empty")
    if head.startswith(_ZIP_MAGIC) or (head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5):
        return
    text = head.lstrip().lower()
    hint = (
        "it is an HTML page, as a failed or redirected download saves"
        if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head"))
        else f"it starts with {head[:16]!r}"
    )
    raise _not_a_checkpoint(
        path, f"{hint}; torch.save writes a zip archive or a pickle stream. Download it again"
    )


def _load_torch_file(path: str) -> Mapping:
    _check_checkpoint_header(path)
    try:
        import torch  # lazy: only .pth/.pt files need PyTorch
    except ImportError as err:
        raise ImportError(
            f"reading {path!r} needs PyTorch: `pip install torch` (the CPU build is enough: "
            "`pip install torch --index-url https://download.pytorch.org/whl/cpu`), or convert "
            "the checkpoint to .npz elsewhere with "
            "`np.savez(out, **{k: v.numpy() for k, v in state_dict.items()})`"
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch reports damaged data and pickled Python objects with the same exception; only
        # the latter is a valid checkpoint that weights_only=False could read.
        if "Unsupported global" not in str(err):
            raise _not_a_checkpoint(path, "its pickle stream is damaged") from err
        raise ValueError(
            f"{path!r} holds more than tensors and plain containers, so it cannot be read with "
            "torch.load(weights_only=True). If you trust the file, load it yourself with "
            "torch.load(path, weights_only=False) and pass the state dict (a mapping) instead."
        ) from err
    except (EOFError, OSError, RuntimeError) as err:  # truncated pickle or zip, damaged zip
        raise _not_a_checkpoint(path, f"truncated or damaged: {str(err).splitlines()[0]}") from err


def read_state_dict(source) -> dict[str, np.ndarray]:
    """A flat ``{torch key: numpy array}`` from a ``.pth``/``.pt``/``.npz`` path or a mapping.

    Unwraps ``{"model": ...}`` / ``{"state_dict": ...}`` checkpoints, strips a ``module.`` prefix
    (``DataParallel``) and, for ``.npz`` files, drops ``__dunder__`` entries (fixture extras).
    """
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path.endswith(".npz"):
            with np.load(path) as data:
                state = {k: data[k] for k in data.files if not k.startswith("__")}
        else:
            state = _load_torch_file(path)
    elif isinstance(source, Mapping):
        state = source
    else:
        raise TypeError(f"source must be a path or a mapping, got {type(source).__name__}")
    if not isinstance(state, Mapping):
        raise ValueError(
            f"expected a state dict (a mapping from parameter names to tensors), got "
            f"{type(state).__name__}"
        )

    for wrapper in _WRAPPER_KEYS:
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    out = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            raise ValueError(
                f"entry {key!r} of the state dict is a {type(value).__name__}, not a tensor; "
                f"expected a flat state dict, or one wrapped as "
                f"{' or '.join(repr(w) for w in _WRAPPER_KEYS)} (found keys: "
                f"{', '.join(map(repr, list(state)[:10]))})"
            )
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = _to_numpy(value)
    return out


def load_torch_weights(model: keras.Model, source, strict: bool = True) -> LoadReport:
    """Copies PyTorch weights into a zoo model (see :func:`keras_gdkd.models.get_model`).

    Args:
        model: a model built by ``get_model`` (layer names follow the torch module paths).
        source: path to a ``.pth``/``.pt`` checkpoint (needs torch), a ``.npz`` of torch-layout
            arrays, or a mapping ``key -> array`` (numpy arrays or torch tensors).
        strict: if True, any missing key, unexpected key or shape mismatch raises one
            ``ValueError`` listing all of them and nothing is assigned; if False, every key that
            matches is loaded, the rest is reported and a warning gives the summary whenever the
            model or the checkpoint was not covered in full.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ValueError: ``"not a PyTorch checkpoint: <path>"`` for an empty file, an HTML page or
            other bytes that ``torch.save`` does not write, or a damaged file; a listing of the
            missing, unexpected and mismatched keys under ``strict=True``.
    """
    table = torch_key_table(model)
    state = read_state_dict(source)
    ignored = sorted(k for k in state if k.endswith(_IGNORED_SUFFIXES))
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}

    missing = sorted(k for k in table if k not in state)
    unexpected = sorted(k for k in state if k not in table)
    mismatched, assignments = [], []
    for key, slot in table.items():
        if key not in state:
            continue
        value = state[key]
        if tuple(value.shape) != slot.torch_shape:
            mismatched.append(
                f"{key}: checkpoint {tuple(value.shape)}, model expects {slot.torch_shape}"
            )
            continue
        assignments.append((key, slot, value))

    if strict and (missing or unexpected or mismatched):
        lines = [f"cannot load the checkpoint into {model.name!r} (strict=True):"]
        if not assignments and not mismatched:
            lines.append(
                f"no key matches: the model expects keys like {_examples(table)}, "
                f"the checkpoint has {_examples(state) or 'no tensors'}"
            )
        if missing:
            lines.append(f"missing keys ({len(missing)}):")
            lines += [f"  {k} (expected shape {table[k].torch_shape})" for k in missing]
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}):")
            lines += [f"  {k} {tuple(state[k].shape)}" for k in unexpected]
        if mismatched:
            lines.append(f"shape mismatches ({len(mismatched)}):")
            lines += [f"  {m}" for m in mismatched]
        raise ValueError("\n".join(lines))

    for _, slot, value in assignments:
        slot.variable.assign(slot.to_keras(value).astype(slot.variable.dtype))
    report = LoadReport(
        loaded=[k for k, _, _ in assignments],
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
        ignored=ignored,
    )
    if missing or unexpected or mismatched:
        details = [f"missing e.g. {_examples(missing)}"] if missing else []
        details += [f"unexpected e.g. {_examples(unexpected)}"] if unexpected else []
        details += [f"shape mismatch e.g. {mismatched[0]}"] if mismatched else []
        warnings.warn(
            f"load_torch_weights(strict=False) into {model.name!r}: {len(report.loaded)} of "
            f"{len(table)} model tensors loaded; {report} ({'; '.join(details)})",
            stacklevel=2,
        )
    return report


def _examples(keys, n: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
