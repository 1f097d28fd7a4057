"""Did pruning lose the best configuration? `python -m fmnist.retrain SWEEP_DIR --out DIR [--jobs N] [override ...]`

Trains every configuration a sweep tried (its summary.csv) to the sweep's full trainer.max_epochs, pruned or not, as
plain single runs of `python -m fmnist.train` (no Optuna, so it runs wherever fmnist trains: a GPU box too), N at a
time. Then compares: the configuration the pruned sweep picked against the one the whole curves pick, both by
validation accuracy. Writes DIR/<trial>/ (one run each, resumable: a rerun finishes what is missing),
DIR/retrain.md and DIR/retrain.json. `python -m fmnist.pruner_replay DIR` then replays these whole curves through
every pruner. Extra arguments are Hydra overrides for every run (trainer.device=cuda logger=none ...).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.runs import pct
from fmnist.ops.trials import params

RETRAINED = ("COMPLETE", "PRUNED", "DIVERGED")  # a failed trial trained nothing: its failure is not a curve


def configurations(sweep_dir: Path) -> list[dict]:
    """The sweep's table rows of trials that trained, in trial order (the order the sweep ran them)."""
    table = sweep_dir / "summary.csv"
    if not table.exists():
        raise UserError(f"{sweep_dir} has no summary.csv: give a sweep folder (python -m fmnist.sweep_summary DIR)")
    rows = sorted((r for r in runs.read_csv(table) if r["state"] in RETRAINED), key=lambda r: int(r["trial"]))
    if not rows:
        raise UserError(f"{table} lists no trial that trained: nothing to retrain")
    return rows


def overrides(row: dict) -> list[str]:
    """The Hydra overrides that train this row's configuration: every searched key and its max_epochs."""
    return [f"{key}={row[name]}" for name, key in params().items()]


def _run(row: dict, out: Path, extra: list[str]) -> tuple[str, str]:
    """Train one configuration into out/<trial> (train resumes from its last.pt); (trial, outcome)."""
    run_dir = out / row["trial"]
    done = runs.summary_of(run_dir, "train")
    if done:
        return row["trial"], f"{done['status']} earlier"
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fmnist.train", *overrides(row), *extra, f"hydra.run.dir={run_dir}"]
    with open(run_dir / "stdout.log", "a") as log:  # train.log is Hydra's own
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    summary = runs.summary_of(run_dir, "train")
    return row["trial"], summary["status"] if summary and code == 0 else f"failed (exit {code}, see {log.name})"


def retrain(sweep_dir: Path, out: Path, jobs: int = 1, extra: list[str] = ()) -> dict:
    rows = configurations(sweep_dir)
    started = time.perf_counter()
    # longest first (most steps: the smallest batches), so the last runs do not leave the other slots idle
    longest_first = sorted(rows, key=lambda r: (int(r["batch_size"]) / int(r["max_epochs"]), int(r["trial"])))
    with ThreadPoolExecutor(jobs) as pool:  # threads only wait: each run is its own process
        for trial, outcome in pool.map(lambda r: _run(r, out, list(extra)), longest_first):
            print(f"trial {trial}: {outcome}", flush=True)
    return compare(rows, out, time.perf_counter() - started, jobs, extra)


def compare(rows: list[dict], out: Path, seconds: float, jobs: int, extra) -> dict:
    """Per trial: what the sweep saw (state, epochs, best val) beside its whole curve; the two picks."""
    trials = []
    for row in rows:
        summary = runs.summary_of(out / row["trial"], "train")
        best = (summary or {}).get("best") or {}
        trials.append({
            "trial": int(row["trial"]),
            "config": {name: row[name] for name in params()},
            "sweep_state": row["state"],
            "sweep_epochs": int(row["epochs"]),
            "sweep_val": float(row["val_accuracy"]) if row["val_accuracy"] else None,
            "status": summary["status"] if summary else "failed",
            "epochs": (summary or {}).get("epochs_run", 0),
            "best_epoch": best.get("epoch"),
            "val_accuracy": best.get("val_accuracy"),
            "test_accuracy": best.get("test_accuracy"),
            "seconds": (summary or {}).get("wall_seconds"),
            "device": (summary or {}).get("device"),
            "precision": ((summary or {}).get("precision") or {}).get("used"),  # trainer.precision, as it resolved
        })  # fmt: skip
    complete = [t for t in trials if t["sweep_state"] == "COMPLETE" and t["sweep_val"] is not None]
    whole = [t for t in trials if t["status"] == "completed" and t["val_accuracy"] is not None]
    if not complete or not whole:
        raise UserError("no completed trial to compare: the sweep or the retrained runs have none")
    sweep_pick = max(complete, key=lambda t: t["sweep_val"])
    whole_pick = max(whole, key=lambda t: t["val_accuracy"])
    ranked = sorted(whole, key=lambda t: -t["val_accuracy"])
    result = {
        "trials": trials,
        "sweep_pick": sweep_pick["trial"],
        "unpruned_pick": whole_pick["trial"],
        "lost_best": sweep_pick["trial"] != whole_pick["trial"],
        # where the sweep's pick lands among the whole curves (1 = pruning lost nothing)
        "sweep_pick_rank": next((i for i, t in enumerate(ranked, 1) if t["trial"] == sweep_pick["trial"]), None),
        "seconds": seconds,
        "jobs": jobs,
        "overrides": list(extra),
    }
    runs.write_json(result, out / "retrain.json")
    runs.write_text(markdown(result), out / "retrain.md")
    return result


def markdown(r: dict) -> str:
    by = {t["trial"]: t for t in r["trials"]}
    pick, whole = by[r["sweep_pick"]], by[r["unpruned_pick"]]
    verdict = (
        f"pruning **lost** the best configuration: the whole curves pick trial {whole['trial']} (val "
        f"{pct(whole['val_accuracy'])} %, test {pct(whole['test_accuracy'])} %); the sweep's pick ranks "
        f"{r['sweep_pick_rank']} (val {pct(pick['val_accuracy'])} %, test {pct(pick['test_accuracy'])} %)"
        if r["lost_best"]
        else f"pruning kept the best configuration: trial {pick['trial']} is also the pick of the whole curves "
        f"(val {pct(pick['val_accuracy'])} %, test {pct(pick['test_accuracy'])} %)"
    )
    cols = list(r["trials"][0]["config"])
    lines = [
        f"# Every configuration of the sweep, trained to the end ({len(r['trials'])} runs, {r['jobs']} at a time, "
        f"{r['seconds'] / 60:.1f} min; overrides: {' '.join(r['overrides']) or 'none'})",
        "",
        f"The pruned sweep picked trial {r['sweep_pick']}; {verdict}.",
        "",
        f"| trial | {' | '.join(cols)} | sweep: state | sweep: epochs | sweep: val % | whole: val % | "
        "whole: test % | whole: best epoch |",
        "|" + "---|" * (len(cols) + 7),
    ]
    for t in sorted(r["trials"], key=lambda t: -(t["val_accuracy"] or 0)):
        lines.append(
            f"| {t['trial']} | {' | '.join(str(t['config'][c]) for c in cols)} | {t['sweep_state']} | "
            f"{t['sweep_epochs']} | {pct(t['sweep_val'])} | {pct(t['val_accuracy'])} | {pct(t['test_accuracy'])} "
            f"| {t['best_epoch'] or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (or a copy of its summary.csv's folder)")
    parser.add_argument("--out", type=Path, required=True, help="where the retrained runs and the comparison go")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.device=cuda")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --out
    try:
        if args.jobs < 1:
            raise UserError(f"--jobs {args.jobs}: give at least 1")
        result = retrain(args.sweep_dir, args.out, args.jobs, args.overrides)
    except UserError as e:
        sys.exit(f"error: {e}")
    print(markdown(result))


if __name__ == "__main__":
    main()
