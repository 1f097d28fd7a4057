"""Results of a sweep: `python -m fmnist.sweep_summary SWEEP_DIR` writes summary.csv, summary.md and best.json.

Rows come from the Optuna study (state, reason) and each trial's own summary.json (metrics at its best-validation
epoch). Selection is by validation accuracy; test accuracy is reported, never used to choose. The search's findings
(importances.json, plots/importances.png, plots/slice.png) are written beside them.

A multirun of Hydra's basic sweeper (no Optuna study, e.g. `~hparams_search trainer.seed=range(5) ...`): its runs
grouped by all but the seed, with n, mean ± std and 95 % t intervals, into DIR/seeds.md and DIR/seeds.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.ops.seeds import group_runs, write
from fmnist.ops.trials import load_study, summarize


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
        out = summarize(args.sweep_dir, load_study(args.sweep_dir, args.storage, args.study))
    except UserError as e:
        sys.exit(f"error: {e}")
    print((args.sweep_dir / "summary.md").read_text())
    print(f"best.json: {out['best_json']}" if out["best_json"] else "no completed trial yet: no best.json")


if __name__ == "__main__":
    main()
