"""The configuration a run was started with, and what a resume changes about it."""

from __future__ import annotations

from typing import Any

# Recorded for the reader, but a resume under other versions is allowed (with a warning).
INFORMATIONAL = ("versions",)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Human-readable differences between two run configurations, informational keys aside.

    Example:
        >>> config_differences({"lr": 0.05, "seed": 0}, {"lr": 0.1, "seed": 0})
        ['lr: 0.05 at the first start, 0.1 now']
    """
    a = {k: v for k, v in flatten(started).items() if k.split(".")[0] not in INFORMATIONAL}
    b = {k: v for k, v in flatten(now).items() if k.split(".")[0] not in INFORMATIONAL}
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(f"{key}: {a.get(key, '<unset>')} at the first start, "
                         f"{b.get(key, '<unset>')} now")  # fmt: skip
    return lines
