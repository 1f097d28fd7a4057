"""A sweep's trials as a table: summary.csv, summary.md, best.json and the sweep's summary.json, written by the sweeper
at the end of a sweep and by `python -m fmnist.sweep_summary SWEEP_DIR` at any time. What the trials say (curves,
importances) is fmnist.analysis's, added by that stage: the sweep loop ends with its trials.

Rows come from the Optuna study (state, reason) and each trial's own summary.json (metrics at its best-validation
epoch). Selection is by validation accuracy; test accuracy is reported, never used to choose.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.study import search_space

METRICS = ("best_epoch", "val_accuracy", "test_accuracy", "test_loss", "train_accuracy")


def params() -> dict[str, str]:
    """The table's parameter columns: the study's names (the last part of each searched key) -> dotted key."""
    return {key.split(".")[-1]: key for key in [*search_space(), "trainer.max_epochs"]}


def columns() -> tuple[str, ...]:
    return ("rank", "trial", "state", *params(), "epochs", *METRICS, "seconds", "reason", "run_dir")


DUPLICATE = (
    "fmnist:duplicate_of"  # trial system attr: a repeated proposal answered without training (fmnist/search/sweeper.py)
)
STALE = "fmnist:stale:"  # study user attr per trial number: why it was failed as stale (fmnist/search/liveness.py)
SPANS = "fmnist:spans:"  # study user attr per worker (fmnist/search/sweeper.py): [[start, end], ...] in epoch seconds
STATES = ("COMPLETE", "PRUNED", "DIVERGED", "FAIL")  # the table's: Optuna's PRUNED split by who stopped the trial


def configuration(trial) -> dict:
    """What a trial trains: its sampled values and the fixed overrides the plugin stores as user attrs (dotted keys)."""
    return {**trial.params, **{k: v for k, v in trial.user_attrs.items() if "." in k}}


def _row(trial, stale: str = "") -> dict:
    run_dir = trial.user_attrs.get("run_dir")
    summary = (runs.summary_of(run_dir, "train") if run_dir else None) or {}
    state = "DIVERGED" if trial.user_attrs.get("outcome") == "diverged" else trial.state.name
    row = {
        "trial": trial.number,
        "state": state,
        "reason": trial.user_attrs.get("reason") or stale,
        "run_dir": run_dir or "",
        # as trainer.precision resolved in the run (auto may differ between a study's machines); not a CSV column
        "precision": (summary.get("precision") or {}).get("used", "unknown"),
    }
    config = OmegaConf.create(summary.get("config", {}))
    given = configuration(trial)
    for name, key in params().items():
        row[name] = OmegaConf.select(config, key, default=given.get(key, ""))
    metrics = (
        runs.read_csv(Path(run_dir) / "metrics.csv") if run_dir and (Path(run_dir) / "metrics.csv").exists() else []
    )
    row["epochs"] = len(metrics)  # epochs trained, whoever stopped the trial
    row["seconds"] = round(sum(float(m["epoch_seconds"]) for m in metrics), 1)
    best = summary.get("best") if state in ("COMPLETE", "PRUNED") else None
    if best:  # a pruned trial's metrics are those of its best epoch before the cut
        row.update(best_epoch=best["epoch"], **{k: best[k] for k in METRICS if k != "best_epoch"})
    return row


def reruns(trials) -> dict[int, int]:
    """Trials failed as stale -> the trial that ran their configuration again, from the record Optuna's
    RetryHeartbeatStaleTrialCallback keeps on the rerun (its retry_history, read without the experimental warning)."""
    return {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])}


def stale_reasons(study) -> dict[int, str]:
    """Why each stale trial was failed (fmnist/search/liveness.py writes them)."""
    return {int(k[len(STALE) :]): v for k, v in study.user_attrs.items() if k.startswith(STALE)}


def rows_of(study) -> list[dict]:
    """One row per finished trial: completed ones ranked by validation accuracy, then pruned, diverged, failed (a
    stale trial's reason names the trial that ran its configuration again)."""
    trials = study.get_trials(deepcopy=False)
    again, why = reruns(trials), stale_reasons(study)
    stale = {n: f"{why[n]}; runs again as trial {again[n]}" for n in again if n in why}
    rows = [
        _row(t, stale.get(t.number, "")) for t in trials if t.state.is_finished() and DUPLICATE not in t.system_attrs
    ]
    rows.sort(key=lambda r: (STATES.index(r["state"]), -(r.get("val_accuracy") or 0), r["trial"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank if row["state"] == "COMPLETE" else ""
    return rows


def _spans(study) -> list[tuple[float, float]]:
    return sorted(tuple(s) for k, v in study.user_attrs.items() if k.startswith(SPANS) for s in v)


def peak_workers(study) -> int:
    """The most workers that ran at once (a resumed sweep's workers are new processes, not more workers)."""
    spans = _spans(study)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        peak = max(peak, running)
    return peak


def wall_seconds(study) -> float:
    """Seconds during which at least one worker ran: the union of every worker's [start, end] spans."""
    spans = _spans(study)
    total, reached = 0.0, float("-inf")
    for start, end in spans:
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def budget(rows: list[dict], study) -> dict:
    """What pruning saved: epochs (and seconds) trained against what the same trials would have trained without a
    pruner: every pruned trial to its max_epochs at its own measured seconds per epoch. Diverged and failed trials
    stop the same way with or without a pruner."""
    full = [r["max_epochs"] if r["state"] == "PRUNED" else r["epochs"] for r in rows]
    trained = sum(r["epochs"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    # a pruned trial trained at least one epoch (it was asked after one): its own seconds per epoch scale it up
    full_seconds = sum(
        r["seconds"] * f / max(r["epochs"], 1) if r["state"] == "PRUNED" else r["seconds"]
        for r, f in zip(rows, full, strict=True)
    )
    workers = peak_workers(study)
    return {
        "epochs_trained": trained,
        "epochs_without_pruning": sum(full),
        "epochs_fraction": trained / sum(full) if sum(full) else None,
        # every trial to max_epochs (the 40 x 40 budget); a stale trial, killed before it wrote anything, has no config
        "epochs_of_full_grid": sum(r["max_epochs"] for r in rows if isinstance(r["max_epochs"], int)),
        "trial_seconds": round(seconds, 1),
        "trial_seconds_without_pruning": round(full_seconds, 1),
        "sweep_wall_seconds": round(wall_seconds(study), 1),
        "workers": workers,
        # the same trials, unpruned, spread over the same number of workers running side by side
        "sweep_wall_seconds_without_pruning": round(full_seconds / max(workers, 1), 1),
    }


def _markdown(rows: list[dict], study_name: str, spent: dict) -> str:
    def fmt(row, col):
        value = row.get(col, "")
        if col in ("val_accuracy", "test_accuracy", "train_accuracy") and value != "":
            return f"{100 * value:.2f}"
        if col == "test_loss" and value != "":
            return f"{value:.4f}"
        return str(value)

    cols = [c for c in columns() if c != "run_dir"]
    counts = ", ".join(f"{sum(r['state'] == s for r in rows)} {s.lower()}" for s in STATES)
    lines = [
        f"# Sweep {study_name}",
        "",
        f"{counts}. Ranked by validation accuracy; accuracies in %, metrics at each trial's best-validation epoch "
        "(for a pruned trial: before it was stopped).",
        "",
        f"Epochs trained: {spent['epochs_trained']} of {spent['epochs_without_pruning']} without pruning "
        f"({100 * (spent['epochs_fraction'] or 0):.1f} %); trials' time {spent['trial_seconds'] / 3600:.2f} h of an "
        f"estimated {spent['trial_seconds_without_pruning'] / 3600:.2f} h; sweep wall time "
        f"{spent['sweep_wall_seconds'] / 3600:.2f} h with {spent['workers']} worker(s) (estimated without pruning: "
        f"{spent['sweep_wall_seconds_without_pruning'] / 3600:.2f} h).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(fmt(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def trained(study) -> list:
    """The trials that trained: a repeated proposal, answered with an earlier trial's outcome, did not."""
    return [t for t in study.get_trials(deepcopy=False) if DUPLICATE not in t.system_attrs]


def summarize(sweep_dir: str | Path, study) -> dict:
    """Write summary.csv, summary.md, best.json and summary.json into sweep_dir; the rows beside best.json's path."""
    sweep_dir = Path(sweep_dir)
    rows = rows_of(study)
    spent = budget(rows, study)
    runs.write_csv(rows, columns(), sweep_dir / "summary.csv")
    runs.write_text(_markdown(rows, study.study_name, spent), sweep_dir / "summary.md")
    best = next((r for r in rows if r["state"] == "COMPLETE"), None)
    out = {"summary_csv": str(sweep_dir / "summary.csv"), "best": best, "best_json": None, "rows": rows}
    if best:
        best_json = {
            "study_name": study.study_name,
            "trial": best["trial"],
            "params": {k: best[k] for k in params()},
            "metrics": {k: best[k] for k in METRICS},
            "run_dir": best["run_dir"],
            "checkpoint": str((Path(best["run_dir"]) / "checkpoints" / "best.pt").resolve()),
            "n_completed": sum(r["state"] == "COMPLETE" for r in rows),
            "n_trials": len(rows),
        }
        runs.write_json(best_json, sweep_dir / "best.json")
        out["best_json"] = str(sweep_dir / "best.json")
    runs.write_summary(
        "sweep",
        {
            "study_name": study.study_name,
            "trials": {state: sum(r["state"] == state for r in rows) for state in STATES},
            "pruner": study.user_attrs.get("fmnist:pruner", "none"),
            # proposals that repeated a finished trial, answered with its outcome instead of training it again
            "repeated_proposals": sum(DUPLICATE in t.system_attrs for t in study.get_trials(deepcopy=False)),
            # trials whose worker died or lost the storage mid-run: failed, not counted, their configuration run again
            "stale_trials": len(stale_reasons(study)),
            **spent,
            "stopped": {r["trial"]: r["epochs"] for r in rows},  # per trial: the epoch it stopped at
            "precision": _precisions(rows),
            "best": best,
            "best_json": out["best_json"],
        },
        sweep_dir,
    )
    return out


def _precisions(rows: list[dict]) -> dict[str, int]:
    """How many trials computed in each precision."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["precision"]] = counts.get(r["precision"], 0) + 1
    return counts


def load_study(sweep_dir: Path, storage: str | None = None, study_name: str | None = None):
    """The Optuna study of a sweep folder (its optuna.db), or of another storage URL."""
    import optuna  # slow to import: the report reads summary files without it

    from fmnist.search.storage import open_storage, storage_error  # imports optuna, as above

    url = storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise UserError(f"{sweep_dir} has no optuna.db: give the sweep folder or --storage URL")
    storage = open_storage(url)
    try:
        if study_name is None:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            if len(names) != 1:
                raise UserError(f"{url} holds studies {names}: name one with --study")
            study_name = names[0]
        return optuna.load_study(study_name=study_name, storage=storage)
    except UserError:
        raise
    except Exception as e:
        raise storage_error(e, url) from None
