"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch

from fmnist.core.errors import UserError
from fmnist.core.model import ARCH_KEYS, FashionCNN, build
from fmnist.core.runs import atomic


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or not of this project's model."""


def save(obj: dict, path: str | Path) -> None:
    """Write to a temp file in the same folder, then rename: a kill mid-write never leaves half a checkpoint."""
    with atomic(path, "wb") as f:
        torch.save(obj, f)


def load(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint dict; a clear CheckpointError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: train a model first or give another path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of a foreign object, random bytes...
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(e).__name__}): it is corrupt or not an fmnist checkpoint; "
            "retrain or give another path"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no 'arch' and 'state_dict': it is not an fmnist checkpoint")
    return ckpt


def model_from(ckpt: dict, path: str | Path = "checkpoint") -> FashionCNN:
    """Rebuild the model from the architecture stored beside its weights."""
    arch = ckpt["arch"]
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise CheckpointError(f"{path} lacks architecture keys {missing}: it is not an fmnist checkpoint")
    try:
        model = build(arch)
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not match its architecture {arch} ({e})") from e
    return model


def load_model(path: str | Path, map_location="cpu") -> tuple[FashionCNN, dict]:
    ckpt = load(path, map_location)
    return model_from(ckpt, path), ckpt
