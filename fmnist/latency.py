"""Build this machine's per-layer latency table: `python -m fmnist.latency [latency.engine=eager]
[prune.checkpoint=PATH]` times every layer shape the configured pruning of the checkpoint can reach (the table
itself: fmnist/pruning/latency.py), so `fmnist.prune prune=latency` finds them measured."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fmnist.core import checkpoint, runs
from fmnist.core.checks import check
from fmnist.core.errors import one_line_errors
from fmnist.core.machine import cpu_runtime
from fmnist.core.model import layers
from fmnist.pruning.latency import LatencyTable, check_latency
from fmnist.pruning.selection import check_prune
from fmnist.pruning.units import reachable

log = logging.getLogger(__name__)


def build_table(cfg: DictConfig) -> dict:
    """Fill this machine's table with every shape the configured pruning of the checkpoint can reach."""
    p = check(cfg, prune=check_prune, latency=check_latency).prune
    cpu_runtime(cfg.trainer)
    table = LatencyTable.open(cfg.latency, cfg.trainer.threads)
    model, _ = checkpoint.load_model(runs.resolve_checkpoint(p.checkpoint, Path(cfg.paths.sweeps_dir)))
    started = time.perf_counter()
    archs = reachable(model.arch, p.layers, p.step, p.min_units)
    shapes = {layer.key: layer for a in archs for layer in layers(a)}
    for i, (_, layer) in enumerate(sorted(shapes.items()), 1):
        table.layer_ms(layer)
        if i % 100 == 0:
            log.info("%d / %d shapes", i, len(shapes))
    table.save()
    full = table.model_ms(model.arch)
    log.info(
        "%s: %d shapes (%d measured now, %.0f s); %s predicted %.2f ms per batch of %d",
        table.path,
        len(shapes),
        table.measured,
        time.perf_counter() - started,
        model.arch,
        full,
        table.meta["batch_size"],
    )
    return {"table": str(table.path), "shapes": len(shapes), "measured": table.measured, "meta": table.meta}


@hydra.main(version_base="1.3", config_path="../conf", config_name="latency")
@one_line_errors
def main(cfg: DictConfig) -> None:
    build_table(cfg)


if __name__ == "__main__":
    main()
