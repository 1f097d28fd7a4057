"""Configurations of a sweep trained to the end: `python -m fmnist.retrain SWEEP_DIR --out DIR [--jobs N]
[--top K [--seeds N]] [override ...]`

Finishing a search (--top K): the sweep's K best configurations by validation accuracy, each trained to the sweep's
full trainer.max_epochs with seeds 0..N-1 (not the sweep's own seed: the pick is not judged on the draw that picked
it). Completed trials rank first: a pruned trial's validation accuracy is from fewer epochs, and the pruner judged
it worse. Where fewer than K completed (ASHA on a short budget can leave two of forty), pruned trials fill the rest,
deepest first, and the table says so. Writes DIR/<trial>/seed<S>/ (resumable), DIR/finish.md (the study's layout:
parameters as rows, each configuration's test accuracy as mean ± std [95 % interval] (n) beside the study's figure,
and the probability that it is above it), DIR/finish.json and DIR/best.json (the best configuration by mean
validation accuracy, its best-validation seed's checkpoint: what `fmnist.prune prune.checkpoint=DIR` starts from).

Did pruning lose the best configuration? (without --top) Trains every configuration a sweep tried (its summary.csv)
to the sweep's full trainer.max_epochs, pruned or not, as one multirun of `python -m fmnist.train` through Hydra's
joblib launcher, --jobs at a time (no Optuna, so it runs wherever fmnist trains: a GPU box too). Then compares: the
configuration the pruned sweep picked against the one the whole curves pick, both by validation accuracy. Writes
DIR/<trial>/ (one run each, resumable: a rerun finishes what is missing), DIR/retrain.md and DIR/retrain.json.
`python -m fmnist.pruner_replay DIR` then replays these whole curves through every pruner. Extra arguments are Hydra
overrides for every run (trainer.device=cuda logger=none ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fmnist.analysis.seeds import group_runs
from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.runs import pct
from fmnist.core.stats import against, prob_above, quoted
from fmnist.core.study import PUBLISHED as STUDY
from fmnist.search.trials import params
from fmnist.training.jobs import launch

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


def _longest_first(row: dict) -> tuple:
    """Most steps first (the smallest batches), so the last runs do not leave the other slots idle."""
    return int(row["batch_size"]) / int(row["max_epochs"]), int(row["trial"])


def retrain(sweep_dir: Path, out: Path, jobs: int = 1, extra: list[str] = ()) -> dict:
    rows = configurations(sweep_dir)
    started = time.perf_counter()
    longest_first = sorted(rows, key=_longest_first)
    outcomes = launch([(r["trial"], overrides(r)) for r in longest_first], out, jobs, list(extra))
    for row in longest_first:
        print(f"trial {row['trial']}: {outcomes[row['trial']]}", flush=True)
    return compare(rows, out, time.perf_counter() - started, jobs, extra)


def compare(rows: list[dict], out: Path, seconds: float, jobs: int, extra) -> dict:
    """Per trial: what the sweep saw (state, epochs, best val) beside its whole curve; the two picks."""
    trials = []
    for row in rows:
        summary = runs.summary_of(out / row["trial"], "train")
        best = (summary or {}).get("best") or {}
        trials.append(
            {
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
            }
        )
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


def top(sweep_dir: Path, k: int) -> list[dict]:
    """The sweep's k best distinct configurations: completed trials by validation accuracy at their best epoch
    (ties: the earlier trial); where fewer than k completed, pruned trials fill the rest, deepest first (most epochs
    trained, then validation accuracy): the pruner let them run longest, and an accuracy from fewer epochs is not
    comparable with a completed one, so a pruned trial never ranks above a completed one. A configuration listed
    twice counts once (its better trial): sweeps drop answered repeats from their table (ops/trials.rows_of), but
    tables written before they did list them."""
    rows = configurations(sweep_dir)
    done = sorted(
        (r for r in rows if r["state"] == "COMPLETE" and r["val_accuracy"]),
        key=lambda r: (-float(r["val_accuracy"]), int(r["trial"])),
    )
    pruned = sorted(
        (r for r in rows if r["state"] == "PRUNED" and r["val_accuracy"]),
        key=lambda r: (-int(r["epochs"]), -float(r["val_accuracy"]), int(r["trial"])),
    )
    picked, seen = [], set()
    for row in done + pruned:
        config = tuple(str(row[name]) for name in params())
        if config not in seen:
            seen.add(config)
            picked.append(row)
    if len(picked) < k:
        raise UserError(
            f"{sweep_dir} has {len(picked)} distinct configuration(s) that trained ({len(done)} "
            f"completed), fewer than --top {k}: lower --top or run more trials"
        )
    return picked[:k]


def finish(sweep_dir: Path, out: Path, k: int, seeds: int, jobs: int = 1, extra: list[str] = ()) -> dict:
    """The sweep's top k, each trained with seeds 0..seeds-1 into out/<trial>/seed<S>; the study's layout table."""
    rows = top(sweep_dir, k)
    started = time.perf_counter()
    tasks = sorted(((r, s) for r in rows for s in range(seeds)), key=lambda t: (_longest_first(t[0]), t[1]))
    subdirs = [f"{row['trial']}/seed{seed}" for row, seed in tasks]
    outcomes = launch(
        [(sub, [*overrides(row), f"trainer.seed={seed}"]) for sub, (row, seed) in zip(subdirs, tasks, strict=True)],
        out,
        jobs,
        list(extra),
    )
    for sub, (row, seed) in zip(subdirs, tasks, strict=True):
        print(f"trial {row['trial']} seed {seed}: {outcomes[sub]}", flush=True)
    configs = []
    for rank, row in enumerate(rows, 1):
        group = group_runs([out / row["trial"]])["groups"]
        if len(group) != 1:  # the same overrides for every seed: only an edited run folder splits them
            raise UserError(f"{out / row['trial']} holds runs of {len(group)} configurations: remove the stray ones")
        g = group[0]
        test = g["stats"].get("test_accuracy")
        figure = STUDY["top3_test_accuracy"][rank - 1] if rank <= len(STUDY["top3_test_accuracy"]) else None
        configs.append(
            {
                "rank": rank,
                "trial": int(row["trial"]),
                "config": {name: row[name] for name in params()},
                "sweep_state": row["state"],
                "sweep_epochs": int(row["epochs"]),
                "sweep_val": float(row["val_accuracy"]),
                "sweep_test": float(row["test_accuracy"]) if row["test_accuracy"] else None,
                "seeds": g["seeds"],
                "not_completed": g["not_completed"],
                "stats": g["stats"],
                "runs": g["runs"],
                "study_test": figure,
                "p_above_study": prob_above(test, figure) if test and figure is not None else None,
                "runs_above_study": sum(r["test_accuracy"] > figure for r in g["runs"].values()) if figure else None,
                "against_study": against(test, figure) if test and figure is not None else None,
            }
        )
    ranked = [c for c in configs if c["stats"]]
    if not ranked:
        raise UserError(f"no run under {out} completed: see the stdout.log files there")
    best = max(ranked, key=lambda c: (c["stats"]["val_accuracy"]["mean"], -c["rank"]))
    seed, run = max(best["runs"].items(), key=lambda sr: (sr[1]["val_accuracy"], -sr[0]))
    best_json = {
        "source": f"python -m fmnist.retrain {sweep_dir} --top {k} --seeds {seeds}",
        "trial": best["trial"],
        "seed": seed,
        "params": best["config"],
        "metrics": {m: best["stats"][m]["mean"] for m in ("val_accuracy", "test_accuracy")},  # over the seeds
        "run_dir": run["run_dir"],
        "checkpoint": str((Path(run["run_dir"]) / "checkpoints" / "best.pt").resolve()),
    }
    # a resumed invocation trains only what is missing, so its own time says little: the runs' own times (each
    # summed over its resumes by train) are the training's cost
    run_seconds = sum(
        (runs.summary_of(out / r["trial"] / f"seed{s}", "train") or {}).get("wall_seconds") or 0.0 for r, s in tasks
    )
    result = {
        "sweep": str(sweep_dir),
        "top": k,
        "seeds": seeds,
        "configurations": configs,
        "best_trial": best["trial"],
        "seconds": time.perf_counter() - started,
        "run_seconds": run_seconds,
        "runs": len(tasks),
        "jobs": jobs,
        "overrides": list(extra),
        "level": 0.95,
        "method": "t",
    }
    runs.write_json(best_json, out / "best.json")
    runs.write_json(result, out / "finish.json")
    runs.write_text(finish_markdown(result), out / "finish.md")
    return result


def _state(c: dict) -> str:
    """How the sweep left the trial: a pruned one says after how many epochs."""
    return f"pruned at epoch {c['sweep_epochs']}" if c["sweep_state"] == "PRUNED" else c["sweep_state"].lower()


def _time(r: dict) -> str:
    """The runs' own minutes (summed over their resumes) and this invocation's wall time, which a resumed
    invocation makes small; a finish.json from before run_seconds has only the latter."""
    wall = f"{r['seconds'] / 60:.1f} min this invocation, {r['jobs']} at a time"
    if "run_seconds" not in r:
        return wall
    return f"{r['runs']} runs of {r['run_seconds'] / 60:.1f} min in all; {wall}"


def finish_markdown(r: dict) -> str:
    """The study's layout: parameters as rows, one column per configuration, then the study's three figures."""
    configs, figures = r["configurations"], STUDY["top3_test_accuracy"]
    verdicts = {"above": "**beats it**", "inside": "inside the interval", "below": "below it"}

    def row(label: str, cells: list[str], study: list[str] | None = None) -> str:
        return f"| {label} | {' | '.join(cells)} | {' | '.join(study or ['-'] * len(figures))} |"

    def against_cells(c: dict) -> list[str]:
        """P(above), runs above and the verdict against the study's figure of the same rank."""
        if c["against_study"] is None:
            return ["-"] * 3
        p = f"{c['p_above_study']:.2f}" if c["p_above_study"] is not None else "- (one seed)"
        return [p, f"{c['runs_above_study']} of {len(c['runs'])}", verdicts[c["against_study"]]]

    head = [f"fmnist #{c['rank']} (trial {c['trial']})" for c in configs] + [f"study #{i + 1}" for i in range(3)]
    lines = [
        f"# The sweep's top {r['top']} retrained with {r['seeds']} seeds each ({_time(r)}; overrides: "
        f"{' '.join(r['overrides']) or 'none'})",
        "",
        f"Sweep `{r['sweep']}`: its {r['top']} best distinct configurations: completed trials by validation "
        "accuracy, then, where fewer completed, pruned ones deepest first (most epochs, then validation accuracy; "
        "never above a completed one: their accuracy is from fewer epochs). Each trained to the end with seeds "
        f"0-{r['seeds'] - 1} (not the sweep's own). Accuracies at each run's best-validation epoch, as mean ± std "
        "[95 % t interval] (n); P(above) is the probability that the configuration's mean test accuracy is above "
        "the study's figure (t distribution of the mean); it beats the study only where the interval's lower end "
        "is above the study's figure.",
        "",
        f"| | {' | '.join(head)} |",
        "|---" * (len(head) + 1) + "|",
    ]
    for name in params():
        lines.append(row(name, [str(c["config"][name]) for c in configs]))
    lines += [
        row("sweep: state", [_state(c) for c in configs]),
        row("sweep: val % (one run)", [pct(c["sweep_val"]) for c in configs]),
        row("sweep: test % (one run)", [pct(c["sweep_test"]) for c in configs]),
        row("val %", [quoted(c["stats"].get("val_accuracy"), ci=False) for c in configs]),
        row("**test %**", [quoted(c["stats"].get("test_accuracy")) for c in configs], list(map(pct, figures))),
        row("best epoch", [quoted(c["stats"].get("epoch"), 1, 1, ci=False) for c in configs]),
    ]
    cells = [against_cells(c) for c in configs]
    for i, label in enumerate(("P(above study #rank)", "runs above study #rank", "against study #rank")):
        lines.append(row(label, [c[i] for c in cells]))
    missing = [f"trial {c['trial']} seeds {sorted(c['not_completed'])}" for c in configs if c["not_completed"]]
    if missing:
        lines += ["", f"Not completed (diverged or stopped): {'; '.join(missing)}."]
    lines += ["", f"Best by mean validation accuracy: trial {r['best_trial']} (best.json: its best-validation seed)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (or a copy of its summary.csv's folder)")
    parser.add_argument("--out", type=Path, required=True, help="where the retrained runs and the comparison go")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (hydra.launcher.n_jobs)")
    parser.add_argument("--top", type=int, help="finish a search: only the K best completed trials, over --seeds")
    parser.add_argument("--seeds", type=int, help="with --top: seeds 0..N-1 per configuration (default 5)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.device=cuda")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --out
    try:
        for flag in ("jobs", "top", "seeds"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise UserError(f"--{flag} {getattr(args, flag)}: give at least 1")
        if args.seeds is not None and args.top is None:
            raise UserError("--seeds needs --top K: the seeds are for the sweep's K best configurations")
        if any(o.split("=")[0].lstrip("+~") == "trainer.seed" for o in args.overrides) and args.top:
            raise UserError("--top sets trainer.seed itself (0..N-1): drop the trainer.seed override, use --seeds")
        if args.top:
            print(
                finish_markdown(finish(args.sweep_dir, args.out, args.top, args.seeds or 5, args.jobs, args.overrides))
            )
        else:
            print(markdown(retrain(args.sweep_dir, args.out, args.jobs, args.overrides)))
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
