"""The study's findings, computed: what the search says about each hyperparameter, and each of the study's claims
judged on one-factor comparisons run over seeds.

- From the search (`search_findings`, written by every sweep summary): Optuna's hyperparameter importances (fANOVA,
  its default evaluator) as a bar plot and JSON, and Optuna's slice plot (each trial's validation accuracy against
  each parameter's value), on the completed trials or, where too few completed, at the deepest epoch most reached.
- From the comparisons (`claims`): each of the study's sentences, with the runs' figure and a verdict. Differences
  are paired by seed (the same init and batch order in both arms) with a 95 % t interval (fmnist/core/stats.py);
  "holds" only where the interval is on the claim's side, "does not hold" where it is on the other side, and
  "not settled" where it straddles the line. Validation accuracy judges: the test set is for reporting only.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from fmnist.analysis.plots import _pyplot, sweep_curves
from fmnist.analysis.seeds import group_runs
from fmnist.core import runs
from fmnist.core.stats import ACCURACY, interval, paired, quoted, quoted_difference
from fmnist.core.study import preset

CHANCE = 0.2  # best validation accuracy under this (10 classes: chance is 0.1) is "does not learn"
SAME = 0.01  # "about the same": a paired difference whose interval lies within ±1 point
VERDICT = {True: "holds", False: "does not hold", None: "not settled"}
MIN_TRIALS = 10  # importances are fitted on at least this many trials' values (or all of a smaller search's)


def search_findings(study, out_dir: Path, trials: list | None = None) -> dict:
    """importances.json and plots/importances.png, plots/slice.png from the study's trials (`trials`: the ones to
    count, default all; a sweep leaves out repeated proposals); {} when nothing varies among them.

    What is attributed: the completed trials' best validation accuracy where at least MIN_TRIALS of them (or all
    trials, if fewer) completed; otherwise, since ASHA stops most trials early, the validation accuracy at the
    deepest epoch that many trials reached. fANOVA's forest on a handful of points attributes noise: a sweep with 3
    completed trials of 40 gets its importances at epoch 1 or 3 instead, and says so."""
    import optuna  # heavy: only a sweep summary calls this (the report imports this module without it)
    from optuna.visualization import matplotlib as optuna_plots  # as above: optuna

    State = optuna.trial.TrialState
    pool = [
        t
        for t in (study.get_trials(deepcopy=False) if trials is None else trials)
        if t.state in (State.COMPLETE, State.PRUNED) and t.user_attrs.get("outcome") != "diverged"
    ]
    done = [t for t in pool if t.state == State.COMPLETE and t.value is not None and math.isfinite(t.value)]
    need = min(MIN_TRIALS, len(pool))
    if len(done) >= need:
        target, values = "best validation accuracy of the completed trials", {t.number: t.value for t in done}
    else:
        reached = [{e: v for e, v in t.intermediate_values.items() if math.isfinite(v)} for t in pool]
        epochs = sorted({e for r in reached for e in r}, reverse=True)
        epoch = next((e for e in epochs if sum(e in r for r in reached) >= need), None)
        if epoch is None:
            return {}
        target = f"validation accuracy at epoch {epoch} (the deepest epoch {need} or more trials reached)"
        values = {t.number: r[epoch] for t, r in zip(pool, reached, strict=True) if epoch in r}
    counted = [t for t in pool if t.number in values]
    varying = sorted(
        p for p in {k for t in counted for k in t.params} if len({repr(t.params.get(p)) for t in counted}) > 1
    )
    if len(counted) < 2 or not varying:
        return {}
    view = optuna.create_study(direction="maximize")  # the attributed values as completed trials, in memory
    view.add_trials(
        [
            optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=values[t.number])
            for t in counted
        ]
    )
    plt = _pyplot()
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same study gives the same figure
    with warnings.catch_warnings():  # Optuna's matplotlib plots are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        importances = optuna.importance.get_param_importances(view, evaluator=evaluator, params=varying)
        plots = out_dir / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        ax = optuna_plots.plot_param_importances(
            view, evaluator=evaluator, params=varying, target_name="validation accuracy"
        )
        ax.set_xlabel(f"importance for the {target}, {len(counted)} trials", fontsize=8)
        ax.figure.set_size_inches(7, 4)
        ax.figure.savefig(plots / "importances.png", dpi=110, bbox_inches="tight")
        plt.close(ax.figure)
        axes = optuna_plots.plot_slice(view, params=varying, target_name="validation accuracy")
        fig = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        fig.set_size_inches(3 * len(varying), 3.2)
        fig.savefig(plots / "slice.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    result = {
        "evaluator": "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)",
        "target": target,
        "trials": len(counted),
        "importances": {k: round(v, 4) for k, v in importances.items()},
        "plot": str(plots / "importances.png"),
        "slice_plot": str(plots / "slice.png"),
    }
    runs.write_json(result, out_dir / "importances.json")
    return result


def sweep_analysis(sweep_dir: Path, study, rows: list[dict], trained: list) -> dict:
    """What a sweep's trials say, beside its table: every trial's curves (plots/sweep_curves.png) and the importances
    of the trials that trained (`search_findings`); the keys the sweep's summary.json gets for them."""
    curves = sweep_curves(rows, sweep_dir / "plots" / "sweep_curves.png", study.study_name)
    found = search_findings(study, sweep_dir, trained)
    return {
        "curves": str(curves),
        "importances": found.get("importances", {}),
        "importance_target": found.get("target"),  # what they attribute, and on how many trials
        "importance_trials": found.get("trials"),
        "importance_plot": found.get("plot"),
        "slice_plot": found.get("slice_plot"),
    }


def arms(folder: Path, key: str) -> dict:
    """The runs under a one-factor comparison folder grouped by the value of `key` (`model`: the preset's name):
    value -> {seed: best-validation metrics}, plus value -> seeds that diverged."""
    result = group_runs([folder])
    names = {name: preset(name) for name in ("small", "medium", "large")}
    out: dict = {"runs": {}, "diverged": {}, "other": {}}
    for g in result["groups"]:
        if key == "model":
            model = {k.split(".", 1)[1]: v for k, v in g["config"].items() if k.startswith("model.")}
            value = next((n for n, p in names.items() if all(model.get(k) == v for k, v in p.items())), None)
        else:
            value = g["config"].get(key)
        out["runs"][value] = {s: r["val_accuracy"] for s, r in g["runs"].items()}
        statuses = {s: runs.read_summary(Path(d), "train")["status"] for s, d in g["not_completed"].items()}
        out["diverged"][value] = sorted(s for s, status in statuses.items() if status == "diverged")
        out["other"][value] = sorted(s for s, status in statuses.items() if status != "diverged")
    return out


def _diff(a: dict, b: dict) -> dict | None:
    """a - b of validation accuracy, paired by seed; None without common seeds."""
    return paired(b, a) if set(a) & set(b) else None


def _said(name_a: str, name_b: str, d: dict | None) -> str:
    if d is None:
        return f"{name_a} vs {name_b}: no common seeds"
    return f"{name_a} − {name_b} {quoted_difference(d)}"


def _above(d: dict | None) -> bool | None:
    """True where the difference's interval is above 0, False where below, None otherwise."""
    if d is None or d["low"] is None:
        return None
    return True if d["low"] > 0 else False if d["high"] < 0 else None


def _all(verdicts: list[bool | None]) -> bool | None:
    return False if False in verdicts else True if all(v is True for v in verdicts) else None


def lr_high(a: dict) -> dict:
    """Holds when no seed learned (each diverged or stayed under CHANCE), fails when every seed learned."""
    runs_, diverged = a["runs"].get(0.1, {}), a["diverged"].get(0.1, [])
    n = len(runs_) + len(diverged)
    if not n:
        return {"verdict": None, "figure": "no run with lr 0.1"}
    learned = {s: v for s, v in runs_.items() if v >= CHANCE}
    figure = f"lr 0.1: {len(diverged)} of {n} seeds diverged (stopped at chance), {len(learned)} of {n} learned"
    if learned:
        figure += f" (best validation accuracy, %: {quoted(interval(list(learned.values()), bounds=ACCURACY))})"
    return {
        "verdict": True if not learned else False if len(learned) == n else None,
        "figure": f"{figure}; learned = best validation accuracy ≥ {100 * CHANCE:.0f} %",
    }


def lr_low(a: dict) -> dict:
    d = _diff(a["runs"].get(0.01, {}), a["runs"].get(0.001, {}))
    return {
        "verdict": _above(d),
        "figure": "best validation accuracy within the epoch budget, " + _said("lr 0.01", "lr 0.001", d),
    }


def momentum(a: dict) -> dict:
    """Holds when the difference's interval lies within ±SAME, fails when it lies wholly outside."""
    d = _diff(a["runs"].get(0.99, {}), a["runs"].get(0.9, {}))
    verdict = None
    if d is not None and d["low"] is not None:
        inside, outside = -SAME <= d["low"] and d["high"] <= SAME, d["low"] > SAME or d["high"] < -SAME
        verdict = True if inside else False if outside else None
    return {
        "verdict": verdict,
        "figure": f"{_said('momentum 0.99', 'momentum 0.9', d)}; about the same = within ±{100 * SAME:.0f} point",
    }


def capacity(a: dict) -> dict:
    medium = a["runs"].get("medium", {})
    ds = {other: _diff(medium, a["runs"].get(other, {})) for other in ("small", "large")}
    return {
        "verdict": _all([_above(d) for d in ds.values()]),
        "figure": "; ".join(_said("medium", other, d) for other, d in ds.items()),
    }


def init(a: dict) -> dict:
    normal = a["runs"].get("normal", {})
    ds = {x: _diff(a["runs"].get(x, {}), normal) for x in ("xavier_normal", "xavier_uniform")}
    return {
        "verdict": _all([_above(d) for d in ds.values()]),
        "figure": "; ".join(_said(x, "normal", d) for x, d in ds.items()),
    }


def batch(a: dict) -> dict:
    d = _diff(a["runs"].get(64, {}), a["runs"].get(512, {}))
    return {
        "verdict": _above(d),
        "figure": "best validation accuracy within the epoch budget, " + _said("batch 64", "batch 512", d),
    }


# (the study's sentence, the key its comparison varies, the rule, the values it compares) in the study's order; the
# batch-size sentence is fmnist's reading (the study drew none): at a fixed number of epochs, smaller batches take
# more steps. lr 0.1's rule counts its diverged seeds itself.
CLAIMS = (
    ("learning rate 0.1 does not learn", "optimizer.lr", lr_high, ()),
    ("learning rate 0.001 learns slower than 0.01", "optimizer.lr", lr_low, (0.01, 0.001)),
    ("momentum 0.99 does about as well as 0.9", "optimizer.momentum", momentum, (0.99, 0.9)),
    (
        "the medium model does best (small ones underfit, large ones overfit)",
        "model",
        capacity,
        ("medium", "small", "large"),
    ),
    (
        "Xavier initialization beats a plain normal one",
        "model.weight_init",
        init,
        ("xavier_normal", "xavier_uniform", "normal"),
    ),
    ("smaller batches do better in the same number of epochs", "data.batch_size", batch, (64, 512)),
)


def claims(folders: dict[str, Path]) -> list[dict]:
    """Each claim whose comparison folder is given (key -> folder): {claim, key, folder, verdict, figure}. Seeds that
    diverged have no best epoch to pair: the figure names them, since they leave fewer seeds to pair."""
    found = []
    for claim, key, rule, values in CLAIMS:
        if key not in folders:
            continue
        a = arms(folders[key], key)
        judged = rule(a)
        lost = [
            f"{v}: {len(a['diverged'][v])} of {len(a['diverged'][v]) + len(a['runs'].get(v, {}))} seeds diverged"
            for v in values
            if a["diverged"].get(v)
        ]
        figure = judged["figure"] + (f" ({'; '.join(lost)})" if lost else "")
        found.append(
            {
                "claim": claim,
                "key": key,
                "folder": str(folders[key]),
                "figure": figure,
                "verdict": VERDICT[judged["verdict"]],
            }
        )
    return found


def load_importances(sweep_dir: Path) -> dict:
    path = sweep_dir / "importances.json"
    return json.loads(path.read_text()) if path.exists() else {}
