"""Real Fashion-MNIST, read and md5-checked by torchvision, held as tensors on the training device."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from fmnist.core.errors import ConfigError, UserError

log = logging.getLogger(__name__)

N_TRAIN, N_TEST, SIDE = 60_000, 10_000, 28
# md5 of the four uncompressed files as Fashion-MNIST publishes them. Debian's dataset-fashion-mnist re-gzips the
# files, so torchvision's md5 of the original .gz does not match them although the data is the same: check the data.
RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


class DataError(UserError):
    """Missing or corrupt data: the message names the path and the fix."""


@dataclass
class Splits:
    """Normalized images (N, 1, 28, 28) float32 and labels (N,) int64 for each split, on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _raw_dir(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def _stage(root: Path, system_dir: str | None) -> bool:
    """Fill ROOT/FashionMNIST/raw with the four md5-checked uncompressed files, from .gz files found in that
    folder, in ROOT itself or in Debian's folder; False if no complete set of files is anywhere."""
    # torchvision is imported where the files are read, not at the top: its import pulls in torch._dynamo (~1.8 s),
    # which a command refused over a bad override never needs
    from torchvision.datasets.utils import check_integrity

    raw = _raw_dir(root)
    present = [name for name in RAW_MD5 if (raw / name).is_file()]
    bad = [name for name in present if not check_integrity(str(raw / name), RAW_MD5[name])]
    if len(present) == len(RAW_MD5) and not bad:
        return True
    if bad:
        raise DataError(f"{raw / bad[0]} is corrupt (md5 mismatch): delete it and rerun")
    for source in [raw, root] + ([Path(system_dir)] if system_dir else []):
        if not all((source / f"{name}.gz").is_file() for name in RAW_MD5):
            continue
        raw.mkdir(parents=True, exist_ok=True)
        for name, md5 in RAW_MD5.items():
            # a temp file per process: the parallel jobs of a sweep may stage a fresh data folder at the same time
            gz, tmp = source / f"{name}.gz", raw / f".{name}.{os.getpid()}.tmp"
            try:
                with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as e:  # truncated or not gzip at all
                tmp.unlink(missing_ok=True)
                raise DataError(f"{gz} is corrupt ({e}): delete it and reinstall dataset-fashion-mnist (apt)") from e
            if not check_integrity(str(tmp), md5):
                tmp.unlink()
                raise DataError(
                    f"{gz} is corrupt (its data fails the md5 check): delete it and reinstall dataset-fashion-mnist"
                )
            tmp.replace(raw / name)
        log.info("Fashion-MNIST from %s checked and unpacked into %s", source, raw)
        return True
    return False


def _read(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import FashionMNIST  # here, not at the top: see _stage

    try:
        ds = FashionMNIST(str(root), train=train, download=download)
    except Exception as e:  # torchvision raises RuntimeError/URLError/struct errors depending on the damage
        raise DataError(
            f"could not read or fetch Fashion-MNIST in {_raw_dir(root)} ({type(e).__name__}: {e}); "
            "install dataset-fashion-mnist (apt) or copy the four .gz files there, removing damaged ones"
        ) from e
    x, y = ds.data, ds.targets
    n = N_TRAIN if train else N_TEST
    if x.shape != (n, SIDE, SIDE) or y.shape != (n,) or y.min() < 0 or y.max() > 9:
        raise DataError(
            f"Fashion-MNIST under {_raw_dir(root)} has images {tuple(x.shape)} and labels {tuple(y.shape)}, "
            f"expected ({n}, 28, 28) and ({n},): delete that folder and rerun"
        )
    return x, y


def read_raw(root: str | Path, system_dir: str | None = None, download: bool = True):
    """The original uint8 images and labels: ((train_x, train_y), (test_x, test_y))."""
    root = Path(root).expanduser()
    if not _stage(root, system_dir):
        if not download:
            raise DataError(
                f"data.root={root} has no Fashion-MNIST files: install dataset-fashion-mnist (apt), "
                f"copy the four .gz files to {_raw_dir(root)}, or set data.download=true"
            )
        log.info("no local Fashion-MNIST found; downloading with torchvision into %s", _raw_dir(root))
    return _read(root, True, download), _read(root, False, download)


def normalize(x: torch.Tensor, mean: float, std: float, device="cpu") -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalized float32 (N, 1, 28, 28) on device."""
    return ((x.to(device, torch.float32) / 255.0 - mean) / std).unsqueeze(1)


def load_splits(cfg, device: torch.device | str = "cpu") -> Splits:
    """Train/val/test tensors from the data config: normalized once, split with a fixed seed."""
    (train_x, train_y), (test_x, test_y) = read_raw(cfg.root, cfg.get("system_dir"), cfg.get("download", True))
    if cfg.subset is not None:
        train_x, train_y = train_x[: cfg.subset], train_y[: cfg.subset]
    n = len(train_x)
    if not 0 < cfg.val_size < n:
        raise ConfigError(f"data.val_size={cfg.val_size} must be between 1 and the {n} training images - 1")
    # the held-out images depend on split_seed only, so every trial of a sweep validates on the same images
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
    val_idx, train_idx = perm[: cfg.val_size], perm[cfg.val_size :]

    def prep(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, cfg.mean, cfg.std, device)

    return Splits(
        prep(train_x[train_idx]),
        train_y[train_idx].to(device),
        prep(train_x[val_idx]),
        train_y[val_idx].to(device),
        prep(test_x),
        test_y.to(device),
    )
