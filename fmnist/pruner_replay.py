"""Which pruner, measured: `python -m fmnist.pruner_replay SWEEP_DIR` replays an unpruned sweep through each pruner.

A sweep run with `hydra/sweeper/pruner=none` holds every trial's whole validation curve, and so does the folder of
`python -m fmnist.retrain` (a pruned sweep's configurations trained to the end). Fed epoch by epoch into a
fresh in-memory Optuna study with a pruner, in the order one worker would have run them, the curves give exactly the
decisions that pruner would have taken on those trials (a trial's curve does not depend on the pruner) — without
training anything again. Each order (the sweep's own, then random ones) yields: epochs trained, and whether the trial
it would have picked is the one the unpruned sweep picked, with that trial's test accuracy. Writes
pruner_replay.md and pruner_replay.json into SWEEP_DIR.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.study import PUBLISHED
from fmnist.search.trials import load_study, rows_of

PRUNER_DIR = Path(__file__).resolve().parent.parent / "conf" / "hydra" / "sweeper" / "pruner"
PRUNERS = ("asha", "hyperband", "median", "none")


def build_pruner(name: str, max_epochs: int):
    """The pruner of `hydra/sweeper/pruner=NAME`, from the same YAML a sweep uses (max_resource = max_epochs);
    `NAME:key=value,key=value` changes its settings (asha:min_resource=3), as hydra.sweeper.pruner.key=value would."""
    name, _, changes = name.partition(":")
    path = PRUNER_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(
            f"unknown pruner {name!r}: use one of {', '.join(p.stem for p in sorted(PRUNER_DIR.glob('*.yaml')))}"
        )
    pruner = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(changes.split(",") if changes else []))
    return instantiate(OmegaConf.create({"trainer": {"max_epochs": max_epochs}, "pruner": pruner}).pruner)


def curves_of(sweep_dir: Path, metric: str = "val_accuracy") -> list[dict]:
    """Every finished trial of an unpruned sweep: its curve of `metric` and test accuracy per epoch, its max_epochs,
    and whether it stopped on its own (diverged). Failed trials trained nothing and are left out."""
    if (sweep_dir / "retrain.json").exists():
        return _retrained_curves(sweep_dir, metric)
    study = load_study(sweep_dir)
    pruner = study.user_attrs.get("fmnist:pruner", "none")
    if pruner != "none":
        raise UserError(
            f"{sweep_dir} was swept with pruner {pruner}: its pruned curves are cut. Replay needs a sweep "
            "run with hydra/sweeper/pruner=none"
        )
    curves = []
    for row in sorted(rows_of(study), key=lambda r: r["trial"]):
        if row["state"] not in ("COMPLETE", "DIVERGED") or not row["epochs"]:
            continue
        curves.append(
            _curve(row["trial"], Path(row["run_dir"]), int(row["max_epochs"]), row["state"] == "DIVERGED", metric)
        )
    if len(curves) < 2:
        raise UserError(f"{sweep_dir} has {len(curves)} trial(s) with a curve: a replay needs several")
    return curves


def _curve(trial: int, run_dir: Path, max_epochs: int, diverged: bool, metric: str) -> dict:
    metrics = runs.read_csv(run_dir / "metrics.csv")
    values, test = [float(m[metric]) for m in metrics], [float(m["test_accuracy"]) for m in metrics]
    return {"trial": trial, "values": values, "test": test, "max_epochs": max_epochs, "diverged": diverged}


def _retrained_curves(folder: Path, metric: str) -> list[dict]:
    """The whole curves of `python -m fmnist.retrain`'s runs, in the sweep's trial order."""
    trials = json.loads((folder / "retrain.json").read_text())["trials"]
    curves = [
        _curve(t["trial"], folder / str(t["trial"]), int(t["config"]["max_epochs"]), t["status"] == "diverged", metric)
        for t in trials
        if t["status"] in ("completed", "diverged") and t["epochs"]
    ]
    if len(curves) < 2:
        raise UserError(f"{folder} has {len(curves)} retrained run(s) with a curve: a replay needs several")
    return curves


def replay(curves: list[dict], pruner) -> dict:
    """Run `curves` in their order through `pruner`, as fmnist's sweep does: a trial reports after every epoch and
    is asked before all but its last; a diverged one stops at its curve's end and is told PRUNED, as the sweeper does.
    Returns epochs trained per trial, the completed trials ranked by value, and the trial picked (the first)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a fixed name: Hyperband picks a trial's bracket from the study name (an unnamed study gets a random one)
    study = optuna.create_study(
        study_name="replay", direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    epochs, completed = {}, []
    for curve in curves:
        trial, stopped = study.ask(), curve["diverged"]
        for epoch, value in enumerate(curve["values"], 1):
            trial.report(value, epoch)
            epochs[curve["trial"]] = epoch
            if epoch < curve["max_epochs"] and trial.should_prune():
                stopped = True
                break
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, max(curve["values"]))
        completed.append(curve)
    ranked = sorted(completed, key=lambda c: -max(c["values"]))  # stable: the earlier of two equal values first
    return {"epochs": epochs, "picked": ranked[0]["trial"] if ranked else None, "ranked": [c["trial"] for c in ranked]}


def test_at_best(curve: dict) -> float:
    """Test accuracy at the trial's best-validation epoch (the first one, as the training loop keeps it)."""
    values = curve["values"]
    return curve["test"][values.index(max(values))]


def unpruned_pick(curves: list[dict]) -> dict:
    """The trial the unpruned sweep picks: the best value among those that did not diverge."""
    return max((c for c in curves if not c["diverged"]), key=lambda c: max(c["values"]))


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f} %" if value is not None else "-"


def meets(ranked: list[dict], target: float, top3=PUBLISHED["top3_test_accuracy"]) -> tuple[bool, bool]:
    """Whether a sweep's ranked completed trials reach the test targets: its pick >= target, and its top three each
    >= the study's best three (three completed trials needed)."""
    tests = [test_at_best(c) for c in ranked[:3]]
    return bool(tests) and tests[0] >= target, len(tests) == 3 and all(t >= g for t, g in zip(tests, top3, strict=True))


def measure(curves: list[dict], pruners=PRUNERS, orders: int = 20, seed: int = 0, target: float = 0.905) -> list[dict]:
    """Each pruner over the sweep's own order and `orders` random ones: epochs share, picks, their test accuracy,
    how many trials complete, and how often the pick and the top three reach the test targets."""
    by_trial = {c["trial"]: c for c in curves}
    full = sum(len(c["values"]) for c in curves)  # the unpruned sweep's epochs (diverged trials stopped there too)
    unpruned = unpruned_pick(curves)["trial"]
    rng = random.Random(seed)
    sequences = [curves] + [rng.sample(curves, len(curves)) for _ in range(orders)]
    results = []
    for name in pruners:
        outs = [replay(seq, build_pruner(name, max(c["max_epochs"] for c in curves))) for seq in sequences]
        shares = [sum(o["epochs"].values()) / full for o in outs]
        tests = [test_at_best(by_trial[o["picked"]]) if o["picked"] is not None else None for o in outs]
        hits = [meets([by_trial[t] for t in o["ranked"]], target) for o in outs]
        results.append(
            {
                "pruner": name,
                "orders": len(outs),
                "epochs_share_own_order": shares[0],
                "epochs_share_mean": statistics.mean(shares),
                "epochs_share_max": max(shares),
                "kept_best_share": sum(o["picked"] == unpruned for o in outs) / len(outs),
                "picked_own_order": outs[0]["picked"],
                "picked_test_own_order": tests[0],
                "picked_test_mean": statistics.mean(t for t in tests if t is not None),
                "picked_test_min": min(t for t in tests if t is not None),
                "completed_mean": statistics.mean(len(o["ranked"]) for o in outs),
                "target": target,
                "pick_meets_share": sum(pick for pick, _ in hits) / len(outs),
                "top3_meets_share": sum(top for _, top in hits) / len(outs),
                "both_meet_share": sum(pick and top for pick, top in hits) / len(outs),
            }
        )
    return results


def markdown(results: list[dict], curves: list[dict], sweep_dir: Path) -> str:
    full = sum(len(c["values"]) for c in curves)
    best = unpruned_pick(curves)
    lines = [
        f"# Pruners replayed on {sweep_dir.name}",
        "",
        f"{len(curves)} unpruned trials, {full} epochs; the unpruned sweep picks trial {best['trial']} "
        f"(val {100 * max(best['values']):.2f} %, test {100 * test_at_best(best):.2f} %). Each pruner sees the "
        f"sweep's order and {results[0]['orders'] - 1} random orders of the same trials.",
        "",
        f"Targets: the pick's test accuracy >= {100 * results[0]['target']:.2f} %; the top three completed trials' "
        f">= the study's {' / '.join(f'{100 * t:.2f}' for t in PUBLISHED['top3_test_accuracy'])} % (the share of "
        "orders that reach them).",
        "",
        "| pruner | epochs, sweep's order | epochs, mean (max) over orders | picks the unpruned best | "
        "pick's test, sweep's order | pick's test, mean (min) | completed trials, mean | pick reaches target | "
        "top three reach the study's | both |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['pruner']} | {_pct(r['epochs_share_own_order'])} | {_pct(r['epochs_share_mean'])} "
            f"({_pct(r['epochs_share_max'])}) | {_pct(r['kept_best_share'])} of orders | "
            f"{_pct(r['picked_test_own_order'])} (trial {r['picked_own_order']}) | "
            f"{_pct(r['picked_test_mean'])} ({_pct(r['picked_test_min'])}) | {r['completed_mean']:.1f} | "
            f"{_pct(r['pick_meets_share'])} | {_pct(r['top3_meets_share'])} | {_pct(r['both_meet_share'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="an unpruned sweep (pruner=none) or a fmnist.retrain folder")
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=list(PRUNERS),
        help="names from hydra/sweeper/pruner, each optionally NAME:key=value,...",
    )
    parser.add_argument("--orders", type=int, default=20, help="random trial orders besides the sweep's own")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    parser.add_argument("--target", type=float, default=0.905, help="test accuracy the pick should reach")
    args = parser.parse_args(argv)
    try:
        curves = curves_of(args.sweep_dir)
        results = measure(curves, args.pruners, args.orders, args.seed, args.target)
    except UserError as e:
        sys.exit(f"error: {e}")
    text = markdown(results, curves, args.sweep_dir)
    runs.write_text(text, args.sweep_dir / "pruner_replay.md")
    runs.write_json({"curves": len(curves), "results": results}, args.sweep_dir / "pruner_replay.json")
    print(text)


if __name__ == "__main__":
    main()
