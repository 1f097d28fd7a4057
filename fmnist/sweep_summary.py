"""Results of a sweep: `python -m fmnist.sweep_summary SWEEP_DIR` writes summary.csv, summary.md and best.json.

Rows come from the Optuna study (state, reason) and each trial's own summary.json (metrics at its best-validation
epoch). Selection is by validation accuracy; test accuracy is reported, never used to choose. What the search says
(plots/sweep_curves.png, importances.json, plots/importances.png, plots/slice.png) is written beside them. The same
runs at the end of every `--multirun` of the Optuna search, through `SweepAnalysis` (a Hydra callback named in
conf/hparams_search/study_grid.yaml): the sweep loop itself ends with its trial table.

A multirun of Hydra's basic sweeper (no Optuna study, e.g. `~hparams_search trainer.seed=range(5) ...`): its runs
grouped by all but the seed, with n, mean ± std and 95 % t intervals, into DIR/seeds.md and DIR/seeds.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fmnist.analysis.findings import sweep_analysis
from fmnist.analysis.seeds import group_runs, write
from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.search import trials

log = logging.getLogger(__name__)


def summarize(sweep_dir: Path, study) -> dict:
    """The sweep's table (fmnist.search.trials), then what its trials say (fmnist.analysis), in one summary.json."""
    out = trials.summarize(sweep_dir, study)
    found = sweep_analysis(sweep_dir, study, out["rows"], trials.trained(study))
    summary = runs.read_summary(sweep_dir, "sweep")
    runs.write_summary("sweep", {**{k: v for k, v in summary.items() if k != "kind"}, **found}, sweep_dir)
    return out


class SweepAnalysis(Callback):
    """At the end of an Optuna `--multirun` (each worker's, once its loop is done): the sweep's summary with its
    analysis. A sweep whose every trial failed raised before this; it has nothing to analyse."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweeper, sweep_dir = config.hydra.sweeper, Path(config.hydra.sweep.dir)
        if not sweeper.get("storage"):  # an in-memory study ended with its process: `fmnist.sweep_summary` cannot
            log.info("the study was in memory: no analysis of it")  # reach it either
            return
        out = summarize(sweep_dir, trials.load_study(sweep_dir, sweeper.storage, sweeper.study_name))
        log.info("sweep summary and analysis written to %s", out["summary_csv"].rsplit("/", 1)[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite SWEEP_DIR/optuna.db)")
    parser.add_argument("--study", help="study name (default: the only one in the storage)")
    args = parser.parse_args(argv)
    try:
        if args.storage is None and not (args.sweep_dir / "optuna.db").exists() and runs.find(args.sweep_dir, "train"):
            print(write(group_runs([args.sweep_dir]), args.sweep_dir))  # a plain multirun: its runs over seeds
            return
        out = summarize(args.sweep_dir, trials.load_study(args.sweep_dir, args.storage, args.study))
    except UserError as e:
        sys.exit(f"error: {e}")
    print((args.sweep_dir / "summary.md").read_text())
    print(f"best.json: {out['best_json']}" if out["best_json"] else "no completed trial yet: no best.json")


if __name__ == "__main__":
    main()
