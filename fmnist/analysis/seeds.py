"""Runs that differ only in the seed, grouped: n, mean, std and 95 % interval (fmnist/core/stats.py) of each
best-validation metric and of the best epoch; two groups that share seeds are also compared seed by seed. Prune runs
group the same way (their seed is the fine-tuning's batch order): their final validation and test accuracy.

A group is what determines a run's result: the data split and batch size, the model, the optimizer, max_epochs, the
precision the run actually computed in (auto may resolve differently on two machines) and the device. Everything
else (seed, logger, paths, threads, progress bar) is not part of it.
"""

from __future__ import annotations

import math
from pathlib import Path

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.stats import ACCURACY, interval, paired, quoted, quoted_difference

METRICS = ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "epoch")  # "epoch": the best one
# where each metric's mean can lie: its interval is cut there (fmnist/core/stats.py says why)
BOUNDS = {
    "val_accuracy": ACCURACY,
    "test_accuracy": ACCURACY,
    "val_loss": (0.0, math.inf),
    "test_loss": (0.0, math.inf),
    "epoch": (1.0, math.inf),
}


def used_precision(summary: dict) -> str:
    """The precision a run computed in (auto may resolve differently on two machines); fp32 for runs from before
    trainer.precision."""
    return (summary.get("precision") or {}).get("used", "fp32")


def group_key(summary: dict) -> dict:
    """The settings that make two runs the same configuration (all but the seed and the bookkeeping)."""
    c = summary["config"]
    key = {f"data.{k}": c["data"][k] for k in ("batch_size", "val_size", "split_seed", "subset")}
    for group in ("model", "optimizer"):
        key.update({f"{group}.{k}": v for k, v in c[group].items() if not k.startswith("_")})
    key["trainer.max_epochs"] = c["trainer"]["max_epochs"]
    key["precision"] = used_precision(summary)
    key["device"] = summary.get("device")
    return key


def prune_key(summary: dict) -> dict:
    """The settings that make two prune runs the same: the checkpoint, the method and the precision."""
    key = {"checkpoint": summary["source_checkpoint"]}
    key.update({f"prune.{k}": v for k, v in summary["prune"].items() if k != "checkpoint"})
    key["precision"] = used_precision(summary)
    return key


def _entry(run_dir: Path, kind: str) -> tuple[dict, int, dict | None]:
    """(group key, seed, metrics or None where the run did not complete) of one run's summary.json."""
    summary = runs.read_summary(run_dir, kind)
    if kind == "prune":
        if "seed" not in summary:
            raise UserError(
                f"{run_dir}/summary.json has no seed (written before prune recorded it): rerun it, "
                "or leave its folder out"
            )
        after = summary["after"]
        return prune_key(summary), summary["seed"], {m: after[m] for m in ("val_accuracy", "test_accuracy")}
    if "config" not in summary:
        raise UserError(
            f"{run_dir}/summary.json has no config (written before fmnist recorded it): "
            "rerun it, or leave its folder out"
        )
    done = summary["status"] == "completed" and summary.get("best")
    metrics = {m: summary["best"][m] for m in METRICS} if done else None
    return group_key(summary), summary["config"]["trainer"]["seed"], metrics


def group_runs(folders: list[Path]) -> dict:
    """Every training and prune run under `folders`, grouped; groups in the order first met, each with its
    intervals."""
    groups: list[dict] = []
    for folder in folders:
        found = [(d, kind) for kind in ("train", "prune") for d in runs.find(folder, kind)]
        if not found:
            raise UserError(f"{folder}: no training or prune run (summary.json of kind train or prune) under it")
        for run_dir, kind in found:
            key, seed, metrics = _entry(run_dir, kind)
            group = next((g for g in groups if g["config"] == key), None)
            if group is None:
                groups.append(group := {"kind": kind, "config": key, "runs": {}, "not_completed": {}})
            if seed in group["runs"] or seed in group["not_completed"]:
                first = (group["runs"].get(seed) or {}).get("run_dir") or group["not_completed"][seed]
                raise UserError(f"{run_dir} repeats seed {seed} of the same configuration as {first}: leave one out")
            if metrics is None:
                group["not_completed"][seed] = str(run_dir)
            else:
                group["runs"][seed] = {"run_dir": str(run_dir), **metrics}
    for g in groups:
        g["seeds"] = sorted(g["runs"])
        measured = [m for m in METRICS if g["runs"] and all(m in r for r in g["runs"].values())]
        g["stats"] = {m: interval([r[m] for r in g["runs"].values()], bounds=BOUNDS[m]) for m in measured}
    keys = list(dict.fromkeys(k for g in groups for k in g["config"]))  # a train and a prune group share few keys
    differs = sorted(k for k in keys if len({repr(g["config"].get(k)) for g in groups}) > 1)
    for g in groups:
        g["label"] = " ".join(f"{k}={g['config'].get(k)}" for k in differs) or "all runs"
    out = {"groups": groups, "differs": differs, "level": 0.95, "method": "t"}
    if len(groups) == 2 and all(g["runs"] for g in groups):  # the second against the first, seed by seed
        a, b = (g["runs"] for g in groups)
        if set(a) & set(b):
            common = [m for m in METRICS if m in groups[0]["stats"] and m in groups[1]["stats"]]
            out["paired"] = {
                m: paired({s: r[m] for s, r in a.items()}, {s: r[m] for s, r in b.items()}) for m in common
            }
    return out


def write(result: dict, out_dir: Path) -> str:
    """seeds.json and seeds.md into out_dir; the table's text."""
    runs.write_json(result, out_dir / "seeds.json")
    return runs.write_text(markdown(result), out_dir / "seeds.md").read_text()


def markdown(result: dict) -> str:
    """The grouped table (accuracies in %, mean ± std [95 % interval] (n)) and the paired difference."""

    cols = (
        ("val_accuracy", "val %", 100, 2),
        ("test_accuracy", "test %", 100, 2),
        ("val_loss", "val loss", 1, 4),
        ("test_loss", "test loss", 1, 4),
        ("epoch", "best epoch", 1, 1),
    )
    lines = [f"| configuration | seeds | {' | '.join(c[1] for c in cols)} |", "|---" * (len(cols) + 2) + "|"]
    for g in result["groups"]:
        stats = [quoted(g["stats"][m], scale, d) if m in g["stats"] else "—" for m, _, scale, d in cols]
        missing = f" ({len(g['not_completed'])} not completed)" if g["not_completed"] else ""
        lines.append(f"| {g['label']} | {','.join(map(str, g['seeds']))}{missing} | {' | '.join(stats)} |")
    lines.append("")
    lines.append(
        "Mean ± standard deviation over seeds [95 % t interval of the mean], at each run's best epoch "
        "(a prune run: its final model)."
    )
    if "paired" in result:
        first, second = (g["label"] for g in result["groups"])
        pair = result["paired"]
        n = len(pair["test_accuracy"]["paired_by"])
        lines.append(
            f"\nPaired by seed ({n} seeds), {second} minus {first}: test accuracy "
            f"{quoted_difference(pair['test_accuracy'])}, validation "
            f"{quoted_difference(pair['val_accuracy'])}."
        )
    return "\n".join(lines) + "\n"
