"""Results of a sweep: `python -m fmnist.sweep_summary SWEEP_DIR` writes summary.csv, summary.md and best.json.

Rows come from the Optuna study (state, reason) and each trial's own summary.json (metrics at its best-validation
epoch). Selection is by validation accuracy; test accuracy is reported, never used to choose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fmnist import runs
from fmnist.errors import UserError
from fmnist.study import search_space

METRICS = ("best_epoch", "val_accuracy", "test_accuracy", "test_loss", "train_accuracy")


def params() -> dict[str, str]:
    """The table's parameter columns: the study's names (the last part of each searched key) -> dotted key."""
    return {key.split(".")[-1]: key for key in [*search_space(), "trainer.max_epochs"]}


def columns() -> tuple[str, ...]:
    return ("rank", "trial", "state", *params(), *METRICS, "reason", "run_dir")


def _row(trial) -> dict:
    run_dir = trial.user_attrs.get("run_dir")
    summary = {}
    if run_dir and runs.kind_of(run_dir) == "train":
        summary = runs.read_summary(run_dir, "train")
    row = {"trial": trial.number, "state": trial.state.name, "reason": trial.user_attrs.get("reason", "")}
    row["run_dir"] = run_dir or ""
    config = OmegaConf.create(summary.get("config", {}))
    given = {**trial.params, **{k: v for k, v in trial.user_attrs.items() if "." in k}}  # sampled + fixed overrides
    for name, key in params().items():
        row[name] = OmegaConf.select(config, key, default=given.get(key, ""))
    best = summary.get("best") if trial.state.name == "COMPLETE" else None
    if best:
        row.update(best_epoch=best["epoch"], **{k: best[k] for k in METRICS if k != "best_epoch"})
    return row


def rows_of(study) -> list[dict]:
    """One row per finished trial: completed ones ranked by validation accuracy, then pruned, then failed."""
    rows = [_row(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    rows.sort(key=lambda r: (order[r["state"]], -(r.get("val_accuracy") or 0), r["trial"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank if row["state"] == "COMPLETE" else ""
    return rows


def _markdown(rows: list[dict], study_name: str) -> str:
    def fmt(row, col):
        value = row.get(col, "")
        if col in ("val_accuracy", "test_accuracy", "train_accuracy") and value != "":
            return f"{100 * value:.2f}"
        if col == "test_loss" and value != "":
            return f"{value:.4f}"
        return str(value)

    cols = [c for c in columns() if c != "run_dir"]
    lines = [
        f"# Sweep {study_name}",
        "",
        f"{sum(r['state'] == 'COMPLETE' for r in rows)} completed, {sum(r['state'] == 'PRUNED' for r in rows)} "
        f"pruned (diverged), {sum(r['state'] == 'FAIL' for r in rows)} failed. Ranked by validation accuracy; "
        "accuracies in %, metrics at each trial's best-validation epoch.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(fmt(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summarize(sweep_dir: str | Path, study) -> dict:
    """Write summary.csv, summary.md and best.json into sweep_dir; return their paths and the best row."""
    sweep_dir = Path(sweep_dir)
    rows = rows_of(study)
    runs.write_csv(rows, columns(), sweep_dir / "summary.csv")
    runs.write_text(_markdown(rows, study.study_name), sweep_dir / "summary.md")
    best = next((r for r in rows if r["state"] == "COMPLETE"), None)
    out = {"summary_csv": str(sweep_dir / "summary.csv"), "best": best, "best_json": None}
    if best:
        ckpt = Path(best["run_dir"]) / "checkpoints" / "best.pt"
        best_json = {
            "study_name": study.study_name,
            "trial": best["trial"],
            "params": {k: best[k] for k in params()},
            "metrics": {k: best[k] for k in METRICS},
            "run_dir": best["run_dir"],
            "checkpoint": str(ckpt.resolve()),
            "n_completed": sum(r["state"] == "COMPLETE" for r in rows),
            "n_trials": len(rows),
        }
        runs.write_json(best_json, sweep_dir / "best.json")
        out["best_json"] = str(sweep_dir / "best.json")
    counts = {state: sum(r["state"] == state for r in rows) for state in ("COMPLETE", "PRUNED", "FAIL")}
    runs.write_summary("sweep", {"study_name": study.study_name, "trials": counts, "best": best,
                                 "best_json": out["best_json"]}, sweep_dir)  # fmt: skip
    return out


def load_study(sweep_dir: Path, storage: str | None = None, study_name: str | None = None):
    import optuna

    storage = storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///") :]).exists():
        raise UserError(f"{sweep_dir} has no optuna.db: give the sweep folder or --storage URL")
    if study_name is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if len(names) != 1:
            raise UserError(f"{storage} holds studies {names}: name one with --study")
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=storage)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite SWEEP_DIR/optuna.db)")
    parser.add_argument("--study", help="study name (default: the only one in the storage)")
    args = parser.parse_args(argv)
    try:
        out = summarize(args.sweep_dir, load_study(args.sweep_dir, args.storage, args.study))
    except UserError as e:
        sys.exit(f"error: {e}")
    print((args.sweep_dir / "summary.md").read_text())
    print(f"best.json: {out['best_json']}" if out["best_json"] else "no completed trial yet: no best.json")


if __name__ == "__main__":
    main()
