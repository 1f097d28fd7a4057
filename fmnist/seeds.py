"""Results over seeds: `python -m fmnist.seeds RUNS_DIR [RUNS_DIR ...] [--out FOLDER]` groups the training and prune
runs under the folders by configuration (all but the seed) and prints each group's n, mean ± std and 95 % interval.

Two groups that share seeds (e.g. `trainer.precision=fp32` and `bf16` over `trainer.seed=range(5)`) are also
compared seed by seed: the mean difference with its interval. --out writes seeds.json and seeds.md there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmnist.analysis.seeds import group_runs, markdown, write
from fmnist.core.errors import UserError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", type=Path, nargs="+", help="multirun or run folders, searched for training and prune runs"
    )
    parser.add_argument("--out", type=Path, help="write seeds.json and seeds.md into this folder")
    args = parser.parse_args(argv)
    try:
        result = group_runs(args.folders)
    except UserError as e:
        sys.exit(f"error: {e}")
    print(write(result, args.out) if args.out else markdown(result))


if __name__ == "__main__":
    main()
