"""One validation pass over a composed config, before any data is read: types and ranges of every key of every
group present, each refusal a ConfigError naming the key and the fix.

Hydra already refuses unknown keys (the groups are plain YAML under struct mode); what it cannot know is that a batch
size of 0 or a momentum of 2 makes no sense. Checked here, not in each module, so every entry point refuses alike.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from fmnist.errors import ConfigError
from fmnist.loop import METRICS
from fmnist.model import WIDTHS

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _int(value, key: str, low: int = 1, high: int | None = None, fix: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"a whole number >= {low}" if high is None else f"a whole number in [{low}, {high}]"
        raise ConfigError(f"{key}={value!r} must be {bound}{fix}")


def _number(value, key: str, low: float, high: float | None = None, low_open=False, high_open=False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'(' if low_open else '['}{low}"
        hi = f"{high}{')' if high_open else ']'}" if high is not None else "inf)"
        raise ConfigError(f"{key}={value!r} must be a number in {lo}, {hi}")


def _choice(value, key: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: use one of {', '.join(map(str, choices))}")


def _optional(check, value, *args, **kwargs) -> None:
    if value is not None:
        check(value, *args, **kwargs)


def check_model(m: DictConfig) -> None:
    from fmnist.model import INITS, check_arch

    check_arch(m)
    _choice(m.weight_init, "model.weight_init", tuple(INITS))


def check_optimizer(o: DictConfig) -> None:
    _number(o.lr, "optimizer.lr", 0, low_open=True)
    if "momentum" in o:
        _number(o.momentum, "optimizer.momentum", 0, 1, high_open=True)


def check_data(d: DictConfig) -> None:
    root = Path(str(d.root)).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"data.root={d.root} is a file: give a folder (the Fashion-MNIST files go in ROOT/FashionMNIST/raw)"
        )
    _int(d.batch_size, "data.batch_size")
    _int(d.val_size, "data.val_size")
    _optional(_int, d.subset, "data.subset", 2, fix=" (or null for all 60 000 images)")
    if d.subset is not None and d.val_size >= d.subset:
        raise ConfigError(f"data.val_size={d.val_size} must be below data.subset={d.subset}: some images must train")
    if d.val_size >= 60_000:
        raise ConfigError(f"data.val_size={d.val_size} must be below the 60 000 training images")
    _int(d.split_seed, "data.split_seed", 0)
    _choice(d.download, "data.download", (True, False))
    _number(d.std, "data.std", 0, low_open=True)


def check_trainer(t: DictConfig) -> None:
    _int(t.max_epochs, "trainer.max_epochs")
    _int(t.seed, "trainer.seed", 0)
    if not isinstance(t.device, str) or not DEVICE.match(t.device):
        raise ConfigError(f"trainer.device={t.device!r}: use auto, cpu, cuda, cuda:N or mps")
    _int(t.eval_batch_size, "trainer.eval_batch_size")
    _choice(t.resume, "trainer.resume", (True, False))
    _optional(_int, t.chance_patience, "trainer.chance_patience", fix=" (or null: never stop at chance)")
    _choice(t.progress, "trainer.progress", ("auto", True, False))
    _optional(_int, t.threads, "trainer.threads", fix=" (or null: torch's default)")
    _choice(t.malloc_heap, "trainer.malloc_heap", (True, False))


def check_logger(lg: DictConfig) -> None:
    _choice(lg.name, "logger.name", ("wandb", "none"))
    if lg.name == "wandb":
        _choice(lg.mode, "logger.mode", ("offline", "online", "disabled"))


def check_prune(p: DictConfig) -> None:
    if not isinstance(p.layers, ListConfig | list) or not p.layers:
        raise ConfigError(f"prune.layers={p.layers}: give a list of {list(WIDTHS)}")
    unknown = [layer for layer in p.layers if layer not in WIDTHS]
    if unknown:
        raise ConfigError(f"prune.layers has {unknown}: prunable layers are {list(WIDTHS)} (fc2 is the output layer)")
    _choice(p.criterion, "prune.criterion", ("l1", "l2"))
    _optional(_number, p.tolerance, "prune.tolerance", 0, 1)
    if isinstance(p.step, DictConfig):
        for layer in p.layers:
            _int(p.step.get(layer), f"prune.step.{layer}", fix=" (one per pruned layer: {conv1: 1, conv2: 1, fc1: 4})")
    else:
        _int(p.step, "prune.step", fix=" (or one per layer: {conv1: 1, conv2: 1, fc1: 4})")
    _int(p.min_units, "prune.min_units")
    _number(p.finetune_epochs, "prune.finetune_epochs", 0)
    _optional(_number, p.finetune_lr, "prune.finetune_lr", 0, low_open=True)
    _number(p.final_finetune_epochs, "prune.final_finetune_epochs", 0)
    _choice(p.selection, "prune.selection", ("layerwise", "global"))
    _choice(p.cost, "prune.cost", ("flops", "latency"))
    _optional(_number, p.target_flops_ratio, "prune.target_flops_ratio", 1)
    _optional(_number, p.target_speedup, "prune.target_speedup", 1)
    _optional(_number, p.min_saving, "prune.min_saving", 0, 1, low_open=True, high_open=True)
    if p.min_saving and p.selection != "global":
        raise ConfigError(
            "prune.min_saving sizes global selection's candidates: set prune.selection=global, "
            "or prune.min_saving=null for the study's one step at a time"
        )
    if p.selection == "global" and p.tolerance is None and not (p.target_flops_ratio or p.target_speedup):
        raise ConfigError(
            "prune.selection=global with no tolerance and no budget would prune every layer to "
            "min_units: set prune.tolerance, prune.target_flops_ratio or prune.target_speedup"
        )


def check_latency(lat: DictConfig) -> None:
    from fmnist.latency import ENGINES

    _choice(lat.engine, "latency.engine", ENGINES)
    _int(lat.batch_size, "latency.batch_size")
    _int(lat.repeats, "latency.repeats")
    _int(lat.warmup, "latency.warmup", 0)


def check_bench(b: DictConfig) -> None:
    from fmnist.bench import ENGINES

    _int(b.images, "bench.images", 1, 60_000)
    _int(b.batch_size, "bench.batch_size")
    _int(b.repeats, "bench.repeats")
    _int(b.warmup, "bench.warmup", 0)
    engines = list(b.engines) if isinstance(b.engines, ListConfig | list) else None
    if not engines or any(e not in ENGINES for e in engines):
        raise ConfigError(f"bench.engines={b.engines}: give a list of one or more of {', '.join(ENGINES)}")
    if (b.original is None) != (b.pruned is None):
        raise ConfigError("bench.original and bench.pruned go together: give both checkpoints, or bench.prune_dir")


def check_bench_conv(c: DictConfig) -> None:
    from fmnist.bench_conv import LAYOUTS

    for key in ("in_channels", "out_channels"):
        values = c[key]
        if not isinstance(values, ListConfig | list) or not values:
            raise ConfigError(f"bench_conv.{key}={values}: give a list of channel counts")
        for v in values:
            _int(v, f"bench_conv.{key}[]")
    _int(c.side, "bench_conv.side")
    _int(c.kernel, "bench_conv.kernel", 1, c.side)
    _int(c.batch_size, "bench_conv.batch_size")
    _int(c.repeats, "bench_conv.repeats")
    if not c.layouts or any(layout not in LAYOUTS for layout in c.layouts):
        raise ConfigError(f"bench_conv.layouts={c.layouts}: give a list of one or more of {', '.join(LAYOUTS)}")


CHECKS = {
    "model": check_model,
    "optimizer": check_optimizer,
    "data": check_data,
    "trainer": check_trainer,
    "logger": check_logger,
    "prune": check_prune,
    "bench": check_bench,
    "latency": check_latency,
    "bench_conv": check_bench_conv,
}


def check(cfg: DictConfig) -> DictConfig:
    """Validate every group the config has; return it unchanged."""
    for group, check_group in CHECKS.items():
        if group in cfg:
            check_group(cfg[group])
    if "optimized_metric" in cfg:
        _choice(cfg.optimized_metric, "optimized_metric", METRICS)
    return cfg
