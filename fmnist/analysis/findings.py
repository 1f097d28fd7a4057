"""The study's findings, computed: what the search says about each hyperparameter, and each of the study's claims
judged on one-factor comparisons run over seeds.

- From the search (`search_findings`, written by every sweep summary): Optuna's hyperparameter importances (fANOVA,
  its default evaluator) as a bar plot and JSON, and Optuna's slice plot (each trial's validation accuracy against
  each parameter's value), on the completed trials or, where too few completed, at the deepest epoch most reached.
- From one-factor runs over seeds (`judge`, `claims`): each of the study's sentences, with the runs' figure and a
  verdict. Every run counts: one stopped as diverged enters at the accuracy it reached (near chance), and each
  value's divergence rate is given with its Wilson interval. Accuracies are taken where training ended (the last
  epoch: the study's claims are about where training ends), differences paired by seed (the same init and batch
  order in both arms) with a 95 % t interval (fmnist/core/stats.py): "holds" only where the interval is on the
  claim's side, "does not hold" where it is on the other, "not settled" where it straddles. "About the same" is an
  equivalence claim, judged by two one-sided tests against ±MARGIN; "does not learn" is a rate, judged by its Wilson
  interval against one half. Validation accuracy judges: the test set is for reporting only.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from scipy import stats

from fmnist.analysis.plots import _pyplot, sweep_curves
from fmnist.analysis.seeds import group_key, used_precision
from fmnist.core import runs
from fmnist.core.stats import ACCURACY, interval, paired, quoted, quoted_difference, seeds_for
from fmnist.core.study import preset

CHANCE = 0.2  # validation accuracy under this where training ended (10 classes: chance is 0.1): did not learn
MARGIN = 0.005  # "about the same": equivalence within ±0.5 points, tested by two one-sided tests
CURVE = ("epoch", "train_accuracy", "val_accuracy", "test_accuracy")  # what a run's record keeps per epoch
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


def record(run_dir: Path) -> dict:
    """What a claim reads of one training run: its seed, how it ended, and its curve (metrics.csv: validation, test
    and training accuracy per epoch; a diverged run's stops where it was stopped)."""
    summary = runs.read_summary(run_dir, "train")
    table = run_dir / "metrics.csv"
    rows = runs.read_csv(table) if table.exists() else []
    curve = [
        {k: (int(r[k]) if k == "epoch" else float(r[k])) for k in CURVE if r.get(k) not in (None, "")} for r in rows
    ]
    # all of its epochs or none: a run resumed by code that began writing end times would count only its last ones
    timed = rows and all(r.get("ended_at") for r in rows)
    epochs = [(float(r["ended_at"]) - float(r["epoch_seconds"]), float(r["ended_at"])) for r in rows] if timed else []
    return {
        "seed": summary["config"]["trainer"]["seed"],
        "status": summary["status"],
        "max_epochs": summary["config"]["trainer"]["max_epochs"],
        "curve": curve,
        "config": group_key(summary),
        "precision": used_precision(summary),
        "seconds": summary.get("wall_seconds"),
        "cpu": summary.get("cpu"),  # None for a run trained before the summary named its CPU
        # when it trained: its epochs on the clock, run together (None for a run trained before epochs had end times)
        "spans": merged(epochs) if timed else None,
    }


GAP = 60.0  # seconds between two epochs (a checkpoint, the next run starting) still counted as one stretch


def merged(spans: list[tuple[float, float]]) -> list[list[float]]:
    """[start, end] spans (Unix seconds) joined where they overlap or lie under GAP apart, in order."""
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start - out[-1][1] < GAP:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def wall_seconds(records: list[dict]) -> float:
    """The wall time while any of these runs trained: the length of the union of their spans."""
    return sum(end - start for start, end in merged([tuple(s) for r in records for s in r.get("spans") or []]))


def value_of(config: dict, key: str):
    """The value a run has of a comparison's key (`model`: the preset whose architecture it has, else None)."""
    if key != "model":
        return config.get(key)
    model = {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith("model.")}
    names = {name: preset(name) for name in ("small", "medium", "large")}
    return next((n for n, p in names.items() if all(model.get(k) == v for k, v in p.items())), None)


def arms(records: list[dict], key: str) -> dict:
    """Runs grouped by their value of `key`: value -> {seed: record}."""
    out: dict = {}
    for r in records:
        out.setdefault(value_of(r["config"], key), {})[r["seed"]] = r
    return out


def arms_in(folder: Path, key: str) -> dict:
    """The runs under a one-factor comparison folder (every run, diverged ones too), grouped by `key`."""
    return arms([record(d) for d in runs.find(folder, "train")], key)


def final(r: dict) -> float:
    """Validation accuracy where the run ended: its last epoch (a diverged run: where it was stopped, near chance)."""
    return r["curve"][-1]["val_accuracy"] if r["curve"] else 0.0


def area(r: dict) -> float:
    """Mean validation accuracy over the whole budget: how fast a run learns (a diverged run's last value held)."""
    values = [row["val_accuracy"] for row in r["curve"]] or [0.0]
    return sum(values + [values[-1]] * (r["max_epochs"] - len(values))) / r["max_epochs"]


def learned(r: dict) -> bool:
    return r["status"] != "diverged" and final(r) >= CHANCE


def wilson(k: int, n: int) -> dict:
    """k of n with its 95 % Wilson score interval (scipy.stats.binomtest)."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"k": k, "n": n, "rate": k / n, "low": float(ci.low), "high": float(ci.high)}


def quoted_rate(w: dict) -> str:
    return f"{w['k']} of {w['n']} [{100 * w['low']:.0f}, {100 * w['high']:.0f}] %"


def _diff(a: dict, b: dict, measure=final) -> dict | None:
    """a - b of `measure` (validation accuracy where training ended), paired by seed over every run both arms
    have, diverged runs at the accuracy they reached; None without common seeds."""
    seeds = set(a) & set(b)
    if not seeds:
        return None
    return paired({s: measure(b[s]) for s in seeds}, {s: measure(a[s]) for s in seeds})


def _said(name_a: str, name_b: str, d: dict | None, offer: bool) -> str:
    """A paired difference as the figure quotes it; an open one, with `offer`, also says how many seeds would settle
    it (not where its number of seeds was fixed beforehand and is reached)."""
    if d is None:
        return f"{name_a} vs {name_b}: no common seeds"
    said = f"{name_a} − {name_b} {quoted_difference(d)}"
    if offer and _above(d) is None and d["low"] is not None:  # open: what settling it would take, as measured
        n = seeds_for(d)
        said += f", {n} seeds" if n else ", over 1000 seeds"
        said += " would clear zero with 80 % power at this mean and spread"
    return said


def _above(d: dict | None) -> bool | None:
    """True where the difference's interval is above 0, False where below, None otherwise."""
    if d is None or d["low"] is None:
        return None
    return True if d["low"] > 0 else False if d["high"] < 0 else None


def _all(verdicts: list[bool | None]) -> bool | None:
    return False if False in verdicts else True if all(v is True for v in verdicts) else None


def equivalence(differences: list[float], margin: float) -> dict:
    """Two one-sided t tests (TOST) of paired differences against ±margin (scipy.stats.ttest_1samp): equivalent
    where both reject at 5 % (the 90 % interval inside ±margin); shown different where the 90 % interval lies wholly
    outside it (one one-sided test rejects |d| <= margin); open otherwise."""
    n = len(differences)
    if n < 2:
        return {"n": n, "verdict": None, "p": None, "low90": None, "high90": None}
    ci = interval(differences, 0.90)
    low90, high90 = ci["low"], ci["high"]
    if ci["std"] == 0:  # every seed the same difference: no spread to test against
        p = 0.0 if abs(ci["mean"]) < margin else 1.0
    else:
        p = max(
            stats.ttest_1samp(differences, -margin, alternative="greater").pvalue,
            stats.ttest_1samp(differences, margin, alternative="less").pvalue,
        )
    verdict = True if -margin < low90 and high90 < margin else False if low90 > margin or high90 < -margin else None
    return {"n": n, "verdict": verdict, "p": float(p), "low90": low90, "high90": high90}


def lr_high(a: dict, margin: float, offer: bool) -> dict:
    """'Does not learn' is a rate: holds where the share of seeds that learned has its Wilson interval below one
    half, fails where above; every seed counts (a diverged one did not learn)."""
    arm = a.get(0.1, {})
    if not arm:
        return {"verdict": None, "figure": "no run with lr 0.1"}
    w = wilson(sum(learned(r) for r in arm.values()), len(arm))
    diverged = sum(r["status"] == "diverged" for r in arm.values())
    figure = f"lr 0.1: {quoted_rate(w)} of seeds learned, {diverged} diverged"
    reached = [final(r) for r in arm.values() if learned(r)]
    if reached:
        figure += f" (those that learned, validation %: {quoted(interval(reached, bounds=ACCURACY))})"
    verdict = True if w["high"] < 0.5 else False if w["low"] > 0.5 else None
    return {
        "verdict": verdict,
        "figure": f"{figure}; learned = not diverged and ≥ {100 * CHANCE:.0f} % validation where training ended",
        "rate": w,
    }


def lr_low(a: dict, margin: float, offer: bool) -> dict:
    d = _diff(a.get(0.01, {}), a.get(0.001, {}), area)
    return {
        "verdict": _above(d),
        "figure": "validation accuracy averaged over the epochs (how fast it learns), "
        + _said("lr 0.01", "lr 0.001", d, offer),
    }


def momentum(a: dict, margin: float, offer: bool) -> dict:
    """About the same, tested as equivalence (TOST) within ±margin."""
    x, y = a.get(0.99, {}), a.get(0.9, {})
    d = _diff(x, y)
    seeds = sorted(set(x) & set(y))
    tost = equivalence([final(x[s]) - final(y[s]) for s in seeds], margin)
    inside = (
        f"; 90 % interval [{100 * tost['low90']:+.2f}, {100 * tost['high90']:+.2f}], TOST p = {tost['p']:.3f}"
        if tost["p"] is not None
        else ""
    )
    return {
        "verdict": tost["verdict"],
        "figure": f"{_said('momentum 0.99', 'momentum 0.9', d, offer)}{inside}; about the same = within "
        f"±{100 * margin:.1f} points (two one-sided tests)",
    }


def capacity(a: dict, margin: float, offer: bool) -> dict:
    medium = a.get("medium", {})
    ds = {other: _diff(medium, a.get(other, {})) for other in ("small", "large")}
    return {
        "verdict": _all([_above(d) for d in ds.values()]),
        "figure": "; ".join(_said("medium", other, d, offer) for other, d in ds.items()),
    }


def init(a: dict, margin: float, offer: bool) -> dict:
    normal = a.get("normal", {})
    ds = {x: _diff(a.get(x, {}), normal) for x in ("xavier_normal", "xavier_uniform")}
    return {
        "verdict": _all([_above(d) for d in ds.values()]),
        "figure": "; ".join(_said(x, "normal", d, offer) for x, d in ds.items()),
    }


def batch(a: dict, margin: float, offer: bool) -> dict:
    d = _diff(a.get(64, {}), a.get(512, {}))
    return {"verdict": _above(d), "figure": _said("batch 64", "batch 512", d, offer)}


# (the study's sentence, the key its comparison varies, the rule, the values it compares) in the study's order; the
# batch-size sentence is fmnist's reading (the study drew none): at a fixed number of epochs, smaller batches take
# more steps.
CLAIMS = (
    ("learning rate 0.1 does not learn", "optimizer.lr", lr_high, (0.1,)),
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


def judge(arms_by_key: dict[str, dict], margin: float = MARGIN, final: frozenset = frozenset()) -> list[dict]:
    """Each claim whose comparison is given (key -> value -> {seed: record}): {claim, key, figure, verdict,
    diverged}. Every run counts: a diverged one at the accuracy it reached, and its value's divergence rate with its
    Wilson interval in the figure. An open claim's figure says how many seeds would settle it, except for the keys in
    `final` (their number of seeds was fixed beforehand and is reached)."""
    found = []
    for claim, key, rule, values in CLAIMS:
        if key not in arms_by_key:
            continue
        a = arms_by_key[key]
        judged = rule(a, margin, key not in final)
        diverged = {
            v: wilson(sum(r["status"] == "diverged" for r in a[v].values()), len(a[v])) for v in values if a.get(v)
        }
        lost = [f"{v}: {quoted_rate(w)} diverged" for v, w in diverged.items() if w["k"]]
        figure = judged["figure"] + (
            f" (seeds diverged, counted at the accuracy they reached: {'; '.join(lost)})" if lost else ""
        )
        found.append(
            {
                "claim": claim,
                "key": key,
                "figure": figure,
                "verdict": VERDICT[judged["verdict"]],
                "seeds": {str(v): sorted(a[v]) for v in values if a.get(v)},
                "diverged": {str(v): w for v, w in diverged.items()},
            }
        )
    return found


def verdict_table(judged: list[dict], plots: dict[str, str]) -> list[str]:
    """Markdown lines: one row per judged claim (verdict, figure, seeds per value), then each plot (factor -> path as
    the page links it): what findings.md and the report's section at the study's budget both show."""
    lines = ["| the study found | verdict | computed from the runs | seeds |", "|---|---|---|---|"]
    for c in judged:
        seeds = "; ".join(f"{v}: {len(s)}" for v, s in c["seeds"].items())
        lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['figure']} | {seeds} |")
    return [*lines, "", *(f"![{key}]({path})\n" for key, path in plots.items())]


def hours_by_cpu(seconds_by_cpu: dict[str, float]) -> str:
    """ "x.x h on CPU, ..." from the seconds trained on each CPU."""
    return ", ".join(f"{s / 3600:.1f} h on {cpu}" for cpu, s in seconds_by_cpu.items())


def claims(folders: dict[str, Path], margin: float = MARGIN) -> list[dict]:
    """`judge` on one-factor comparison folders (key -> folder), each claim with its folder."""
    judged = judge({key: arms_in(folder, key) for key, folder in folders.items()}, margin)
    return [{**c, "folder": str(folders[c["key"]])} for c in judged]


def load_importances(sweep_dir: Path) -> dict:
    path = sweep_dir / "importances.json"
    return json.loads(path.read_text()) if path.exists() else {}
