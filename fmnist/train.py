"""Train one CNN: `python -m fmnist.train [overrides]`; a sweep with `--multirun`. The run itself is the pure
function `fmnist.training.run.train(cfg)`; `main` is the thin wrapper Hydra calls."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from fmnist.core.errors import one_line_errors
from fmnist.training.run import train


def metric_value(summary: dict, name: str) -> float:
    """The value Optuna maximizes: the best epoch's; NaN for a run that diverged or never finished an epoch."""
    if summary["status"] == "diverged" or summary["best"] is None:
        return float("nan")
    return float(summary["best"][name])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    should_stop = None
    if hc.mode == RunMode.MULTIRUN:
        if "group" in cfg.logger and cfg.logger.group is None:
            with open_dict(cfg):  # W&B groups the trials of one sweep
                cfg.logger.group = hc.sweeper.get("study_name") or Path(hc.sweep.dir).name
        if hc.sweeper.get("pruner"):  # a trial of a pruning sweep: report every epoch to its Optuna trial
            from fmnist.search.sweeper import pruning_callback  # it imports optuna, slow: never in a single run

            should_stop = pruning_callback(hc, cfg.optimized_metric)
    return metric_value(train(cfg, should_stop), cfg.optimized_metric)


if __name__ == "__main__":
    main()
