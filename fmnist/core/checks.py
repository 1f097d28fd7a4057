"""One validation pass over a composed config, before any data is read: types and ranges of every key, each refusal
a ConfigError naming the key and the fix.

Hydra already refuses unknown keys (the groups are plain YAML under struct mode); what it cannot know is that a batch
size of 0 or a momentum of 2 makes no sense. The groups every stage shares (model, optimizer, data, trainer, logger)
are checked here; a stage's own group is checked next to the code that owns its choices (prune by
fmnist.pruning.selection, latency by fmnist.pruning.latency, bench by fmnist.pruning.engines, bench_conv by its
stage), and the stage hands those checks to `check`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from fmnist.core.errors import ConfigError
from fmnist.core.model import INITS, check_arch
from fmnist.core.precision import PRECISIONS
from fmnist.core.runs import METRICS

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def integer(value, key: str, low: int = 1, high: int | None = None, fix: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"a whole number >= {low}" if high is None else f"a whole number in [{low}, {high}]"
        raise ConfigError(f"{key}={value!r} must be {bound}{fix}")


def number(value, key: str, low: float, high: float | None = None, low_open=False, high_open=False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'(' if low_open else '['}{low}"
        hi = f"{high}{')' if high_open else ']'}" if high is not None else "inf)"
        raise ConfigError(f"{key}={value!r} must be a number in {lo}, {hi}")


def one_of(value, key: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: use one of {', '.join(map(str, choices))}")


def optional(check, value, *args, **kwargs) -> None:
    if value is not None:
        check(value, *args, **kwargs)


def check_model(m: DictConfig) -> None:
    check_arch(m)
    one_of(m.weight_init, "model.weight_init", tuple(INITS))


def check_optimizer(o: DictConfig) -> None:
    number(o.lr, "optimizer.lr", 0, low_open=True)
    if "momentum" in o:
        number(o.momentum, "optimizer.momentum", 0, 1, high_open=True)


def check_data(d: DictConfig) -> None:
    root = Path(str(d.root)).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"data.root={d.root} is a file: give a folder (the Fashion-MNIST files go in ROOT/FashionMNIST/raw)"
        )
    integer(d.batch_size, "data.batch_size")
    integer(d.val_size, "data.val_size")
    optional(integer, d.subset, "data.subset", 2, fix=" (or null for all 60 000 images)")
    if d.subset is not None and d.val_size >= d.subset:
        raise ConfigError(f"data.val_size={d.val_size} must be below data.subset={d.subset}: some images must train")
    if d.val_size >= 60_000:
        raise ConfigError(f"data.val_size={d.val_size} must be below the 60 000 training images")
    integer(d.split_seed, "data.split_seed", 0)
    one_of(d.download, "data.download", (True, False))
    number(d.std, "data.std", 0, low_open=True)


def check_trainer(t: DictConfig) -> None:
    integer(t.max_epochs, "trainer.max_epochs")
    integer(t.seed, "trainer.seed", 0)
    if not isinstance(t.device, str) or not DEVICE.match(t.device):
        raise ConfigError(f"trainer.device={t.device!r}: use auto, cpu, cuda, cuda:N or mps")
    integer(t.eval_batch_size, "trainer.eval_batch_size")
    one_of(t.resume, "trainer.resume", (True, False))
    optional(integer, t.chance_patience, "trainer.chance_patience", fix=" (or null: never stop at chance)")
    one_of(t.progress, "trainer.progress", ("auto", True, False))
    optional(integer, t.threads, "trainer.threads", fix=" (or null: torch's default)")
    one_of(t.malloc_heap, "trainer.malloc_heap", (True, False))
    one_of(t.precision, "trainer.precision", PRECISIONS)


def check_logger(lg: DictConfig) -> None:
    one_of(lg.name, "logger.name", ("wandb", "none"))
    if lg.name == "wandb":
        one_of(lg.mode, "logger.mode", ("offline", "online", "disabled"))


SHARED = {
    "model": check_model,
    "optimizer": check_optimizer,
    "data": check_data,
    "trainer": check_trainer,
    "logger": check_logger,
}


def check(cfg: DictConfig, **own: Callable[[DictConfig], None]) -> DictConfig:
    """Validate the shared groups the config has, then the stage's own (`prune=check_prune`, ...); return it."""
    for group, check_group in {**SHARED, **own}.items():
        if group in cfg:
            check_group(cfg[group])
    if "optimized_metric" in cfg:
        one_of(cfg.optimized_metric, "optimized_metric", METRICS)
    return cfg
