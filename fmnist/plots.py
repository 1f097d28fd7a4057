"""Accuracy and loss vs epoch for runs that differ in one hyperparameter:

    python -m fmnist.plots compare DIR --by optimizer.lr

DIR is any folder holding runs (a sweep, or a Hydra basic-sweeper multirun); the PNG goes to DIR/plots/
(the plot itself: fmnist/analysis/plots.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fmnist.analysis.plots import compare, keys
from fmnist.core.errors import UserError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accuracy/loss vs epoch plots from run folders")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="curves of runs coloured by one hyperparameter")
    cmp.add_argument("dir", type=Path, help="a sweep or multirun folder")
    cmp.add_argument(
        "--by", action="append", required=True, help=f"dotted key, e.g. {', '.join(keys()[:3])}; repeatable"
    )
    cmp.add_argument("--out", type=Path, help="PNG path (one --by only); default DIR/plots/compare_<key>.png")
    args = parser.parse_args(argv)
    try:
        for key in args.by:
            print(compare(args.dir, key, args.out if len(args.by) == 1 else None))
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
