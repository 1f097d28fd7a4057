"""The study's report, rebuilt from this repo's outputs: `python -m fmnist.report [--root outputs] [--out DIR]`.

Finds, under --root (or as named): the newest medium training run, the newest sweep, the one-factor comparison
multiruns, prune runs and bench runs; writes report.md (its images copied beside it, under images/) and a
self-contained report.html (images embedded).
Every number comes from those files except the study's published figures (`fmnist.study.PUBLISHED`).
"""

from __future__ import annotations

import argparse
import base64
import json
import operator
import re
import shutil
import statistics
import time
from pathlib import Path

import markdown

from fmnist.analysis.findings import claims, hours_by_cpu, verdict_table
from fmnist.analysis.plots import compare, find_runs, keys, speed_frontier, value_of
from fmnist.analysis.seeds import group_runs, prune_key, used_precision
from fmnist.analysis.seeds import markdown as seeds_table
from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.flops import totals
from fmnist.core.model import widths
from fmnist.core.runs import pct
from fmnist.core.stats import ACCURACY, against, interval, paired, quoted, quoted_difference
from fmnist.core.study import PUBLISHED as STUDY
from fmnist.core.study import grid_points, preset, pruned_arch
from fmnist.search.trials import METRICS as SWEEP_METRICS
from fmnist.search.trials import STATES, params


def discover(root: Path) -> dict:
    """Outputs under root, found by the kind their summary.json states."""
    medium = preset("medium")
    trained = [(d, runs.read_summary(d, "train")) for d in runs.find(root, "train")]
    basic = [d for d, s in trained if not s["multirun"] and s["arch"] == medium and s["best"]]
    sweeps = runs.find(root, "sweep")
    multiruns = [d for d in sorted(p.parent for p in root.glob("**/multirun.yaml")) if d not in sweeps]
    grouped = {d: _configs(d) for d in multiruns}
    # one configuration over seeds (e.g. model=medium trainer.seed=range(5)): the basic model's runs
    seeded = [d for d in multiruns if grouped[d][0] == [medium]]
    finished = sorted(p.parent for p in root.glob("**/finish.json"))
    return {
        "basic": seeded[-1] if seeded else basic[-1] if basic else None,
        "sweep": sweeps[-1] if sweeps else None,
        "finish": finished[-1] if finished else None,
        # Hydra's basic sweeper over one factor (and seeds): the one-factor comparisons; not a folder whose runs
        # differ in several factors (fmnist.findings' runs vary one at a time from a base, but several in all)
        "compare": [d for d in multiruns if len(grouped[d][0]) > 1 and len(grouped[d][1]) == 1],
        "prune": runs.find(root, "prune"),
        "bench": runs.find(root, "bench"),
    }


def _configs(folder: Path) -> tuple[list[dict], set[str]]:
    """The configurations (all but the seed) of the training runs under folder, as their model keys, and the factors
    they differ in (group_runs' keys that differ, a model preset's architecture keys counted as one: `model`)."""
    try:
        grouped = group_runs([folder])
    except UserError:  # no finished training run under it yet
        return [], set()

    def arch(k: str) -> bool:
        return k.startswith("model.") and k != "model.weight_init"

    models = [{k.split(".", 1)[1]: v for k, v in g["config"].items() if arch(k)} for g in grouped["groups"]]
    return models, {"model" if arch(k) else k for k in grouped["differs"]}


def missing(what: str, how: str) -> str:
    return f"_Missing: {what}. Produce it with `{how}`, then rerun `python -m fmnist.report`._\n"


def section_basic(run_dir: Path | None) -> str:
    out = ["## 1. Basic model (medium preset)\n"]
    if run_dir is None:
        return "\n".join(out) + missing("no completed training run of the medium preset", "python -m fmnist.train")
    if not (run_dir / runs.SUMMARY).exists():  # a multirun of the medium preset over seeds
        return "\n".join(out) + _basic_over_seeds(run_dir)
    s = runs.read_summary(run_dir, "train")
    b = s["best"]
    out += [
        f"Run `{run_dir}`: {s['epochs_run']} epochs, batch {s['config']['data']['batch_size']}, "
        f"lr {s['config']['optimizer']['lr']}, momentum {s['config']['optimizer']['momentum']}; "
        f"best validation epoch {b['epoch']}.\n",
        "| | train accuracy (%) | test accuracy (%) |",
        "|---|---|---|",
        f"| fmnist (best-validation epoch) | {pct(b['train_accuracy'])} | {pct(b['test_accuracy'])} |",
        f"| study | {pct(STUDY['basic_train_accuracy'])} | {pct(STUDY['basic_test_accuracy'])} |",
    ]
    return "\n".join(out) + "\n"


def _basic_over_seeds(folder: Path) -> str:
    g = group_runs([folder])["groups"][0]
    train_acc = interval(
        [runs.read_summary(Path(r["run_dir"]), "train")["best"]["train_accuracy"] for r in g["runs"].values()],
        bounds=ACCURACY,
    )
    test = g["stats"]["test_accuracy"]
    verdict = {
        "above": "**beats** the study's (the interval's lower end is above it)",
        "inside": "is not distinguishable from the study's (its interval holds it)",
        "below": "is below the study's (the interval's upper end is under it)",
    }
    verdict = verdict[against(test, STUDY["basic_test_accuracy"])]
    return (
        "\n".join(
            [
                f"Multirun `{folder}`: seeds {', '.join(map(str, g['seeds']))}, "
                f"{g['config']['trainer.max_epochs']} epochs, "
                f"batch {g['config']['data.batch_size']}, lr {g['config']['optimizer.lr']}, momentum "
                f"{g['config']['optimizer.momentum']}; accuracies at each run's best-validation epoch, mean ± std "
                f"[95 % t interval] (n). The test accuracy {verdict}.\n",
                "| | train accuracy (%) | test accuracy (%) |",
                "|---|---|---|",
                f"| fmnist, over seeds | {quoted(train_acc)} | {quoted(test)} |",
                f"| study (one run) | {pct(STUDY['basic_train_accuracy'])} | {pct(STUDY['basic_test_accuracy'])} |",
            ]
        )
        + "\n"
    )


def section_finish(folder: Path | None) -> str:
    """The sweep's top configurations retrained over seeds (fmnist.retrain --top), its table as written."""
    if folder is None:
        return (
            missing(
                "no top configurations retrained over seeds",
                "python -m fmnist.retrain SWEEP_DIR --top 3 --seeds 5 --out DIR",
            )
            + "\n"
        )
    text = (folder / "finish.md").read_text().splitlines()
    return "\n".join(["### The top configurations over seeds\n", f"`{folder}`: {text[0].lstrip('# ')}.", *text[1:]])


def section_sweep(sweep: Path | None, top: int) -> str:
    out = ["## 2. Hyperparameter search\n"]
    if sweep is None:
        return "\n".join(out) + missing("no sweep with best.json", "python -m fmnist.train --multirun")
    rows = runs.read_csv(sweep / "summary.csv")
    done = [r for r in rows if r["state"] == "COMPLETE"][:top]
    states = ", ".join(f"{sum(r['state'] == s for r in rows)} {s.lower()}" for s in STATES)
    epochs = sorted({r["max_epochs"] for r in rows})
    spent = runs.read_summary(sweep, "sweep")
    out.append(
        f"Sweep `{sweep}`: {len(rows)} trials of the study's {grid_points():,}-point grid ({states}), up to "
        f"{', '.join(epochs)} epochs each (the study: {STUDY['grid_epochs']}), pruner {spent['pruner']}: "
        f"{spent['epochs_trained']} epochs trained of {spent['epochs_without_pruning']} without pruning, trials' time "
        f"{spent['trial_seconds'] / 3600:.2f} h of an estimated {spent['trial_seconds_without_pruning'] / 3600:.2f} h, "
        f"wall time {spent['sweep_wall_seconds'] / 3600:.2f} h with {spent.get('workers', 1)} worker(s) (without "
        f"pruning: ~{spent.get('sweep_wall_seconds_without_pruning', 0) / 3600:.2f} h). "
        "Ranked by validation accuracy; metrics at each trial's best-validation epoch. The study published only the "
        "test accuracy of its top three here.\n"
    )
    if Path(spent.get("curves", "")).exists():
        out.append(f"![sweep curves]({spent['curves']})\n")
    head = [
        "| | "
        + " | ".join(f"fmnist #{i + 1} (trial {r['trial']})" for i, r in enumerate(done))
        + " | "
        + " | ".join(f"study #{i + 1}" for i in range(3))
        + " |"
    ]
    head.append("|---" * (1 + len(done) + 3) + "|")
    lines = [f"| {name} | " + " | ".join(r[name] for r in done) + " | - | - | - |" for name in params()]
    for name in SWEEP_METRICS[1:]:
        fmt = (lambda v: f"{float(v):.4f}") if name == "test_loss" else pct
        study = [pct(v) for v in STUDY["top3_test_accuracy"]] if name == "test_accuracy" else ["-"] * 3
        label = f"{name} (%)" if "accuracy" in name else name
        lines.append(f"| **{label}** | " + " | ".join(fmt(r[name]) for r in done) + " | " + " | ".join(study) + " |")
    return "\n".join(out + head + lines) + "\n"


def section_compare(dirs: list[Path]) -> str:
    out = ["## 3. Accuracy vs epoch comparisons\n"]
    if not dirs:
        return "\n".join(out) + missing(
            "no one-factor multirun",
            "python -m fmnist.train --multirun ~hparams_search optimizer.lr=0.1,0.01,0.001",
        )
    for d in dirs:
        key, found = compare_key(d)
        png = compare(d, key, d / "plots" / f"compare_{key.replace('.', '_')}.png")
        epochs = max(len(r["rows"]) for r in found)
        out.append(f"### `{d.name}`: {key} ({len(found)} runs, {epochs} epochs)\n")
        out.append(f"![{d.name}]({png})\n")
        out.append(seeds_table(group_runs([d])))  # runs that differ only in the seed, grouped
    return "\n".join(out)


def run_name(d: Path) -> str:
    """A run folder as tables name it: a multirun's jobs are numbered folders, so `multirun/0`, not `0`."""
    return f"{d.parent.name}/{d.name}" if d.name.isdigit() else d.name


def compare_key(folder: Path) -> tuple[str, list[dict]]:
    """The one factor a comparison multirun varies (`model` for model=small,medium,large), and its runs."""
    found = find_runs(folder)
    varying = [k for k in keys() if len({str(value_of(r, k)) for r in found}) > 1]
    key = varying[0] if varying else "model"
    if all(k.startswith("model.") for k in varying) and len({value_of(r, "model") for r in found}) > 1:
        key = "model"  # model=small,medium,large: one preset name says more than its five keys
    return key, found


def section_findings(dirs: list[Path], sweep: Path | None, budget: Path | None = None) -> str:
    """The study's findings: each judged on the comparisons over seeds, and at the study's budget where a
    `fmnist.findings` results folder is given (`budget`, its verdicts beside these and its accuracy-vs-epoch plots);
    the search's importances beside them."""
    out = ["## 3b. The study's findings, computed\n"]
    judged = claims({compare_key(d)[0]: d for d in dirs})
    at_budget = json.loads((budget / "findings.json").read_text()) if budget else None
    verdict_at_budget = {c["claim"]: c["verdict"] for c in at_budget["claims"]} if at_budget else {}
    if judged:
        out += [
            "Each sentence of the study judged on the one-factor runs above: validation accuracy where each run "
            "ended (a diverged run at the accuracy it reached: every run counts), differences paired by seed with "
            "their 95 % t interval. It **holds** only where the interval lies on the sentence's side, **does not "
            'hold** where it lies on the other, and is **not settled** where it straddles; "about the same" is '
            'tested as equivalence within ±0.5 points (two one-sided tests), "does not learn" as a rate with its '
            "Wilson interval (`fmnist/analysis/findings.py`).\n",
            "| the study found | computed from the runs | verdict |"
            + (" at the study's budget |" if at_budget else ""),
            "|---|---|---|" + ("---|" if at_budget else ""),
        ]
        out += [
            f"| {c['claim']} | {c['figure']} | **{c['verdict']}** |"
            + (f" {verdict_at_budget.get(c['claim'], '-')} |" if at_budget else "")
            for c in judged
        ] + [""]
    else:
        out.append(
            missing(
                "no one-factor comparison to judge the study's findings on",
                "python -m fmnist.train --multirun ~hparams_search optimizer.lr=0.1,0.01,0.001 trainer.seed=0,1,2",
            )
        )
    if at_budget:
        out += _at_budget(at_budget, budget)
    found = runs.read_summary(sweep, "sweep") if sweep else {}
    if found.get("importances"):
        ranked = sorted(found["importances"].items(), key=lambda kv: -kv[1])
        target = found.get("importance_target") or "best validation accuracy of the completed trials"
        n = f", {found['importance_trials']} trials" if found.get("importance_trials") else ""
        out += [
            f"From the search itself (`{sweep}`; fANOVA, Optuna's default evaluator, on the {target}{n}): how "
            "much of the validation accuracy's variance each hyperparameter explains, and every counted "
            "trial's validation accuracy against each value.\n",
            "| hyperparameter | importance |",
            "|---|---|",
            *[f"| {k} | {v:.3f} |" for k, v in ranked],
            "",
        ]
        for key in ("importance_plot", "slice_plot"):
            if found.get(key) and Path(found[key]).exists():
                out.append(f"![{key}]({found[key]})\n")
    return "\n".join(out)


def _at_budget(result: dict, folder: Path) -> list[str]:
    """The verdicts of `python -m fmnist.findings` (its findings.json in `folder`): every sentence at the study's
    budget, with its figure, its seeds and, per factor, the mean validation accuracy per epoch over seeds."""
    return [
        f"### At the study's budget\n\nFrom `python -m fmnist.findings` (`{folder}/findings.md` names the settings): "
        f"{result['runs']} one-factor runs ({result['diverged']} diverged), "
        f"{hours_by_cpu(result['seconds_by_cpu'])} of training.\n",
        *verdict_table(result["claims"], {key: str(folder / plot) for key, plot in result["plots"].items()}),
    ]


def _frontier(points: list[dict]) -> list[dict]:
    """Pruned models no other one beats in both FLOPs and test accuracy."""
    points = sorted(points, key=lambda p: (p["study_flops"], -p["test_accuracy"]))
    front, best = [], -1.0
    for p in points:
        if p["test_accuracy"] > best:
            front.append(p)
            best = p["test_accuracy"]
    return front


def method_name(p: dict) -> str:
    """How a prune run chose its steps and when it stopped, from its config."""
    name = f"norm ({p['criterion']})"
    if p.get("selection") == "global":
        name += f", global by {p['cost']}" + (f", min_saving {p['min_saving']}" if p.get("min_saving") else "")
    budget = [
        f"{label} {p[k]}x"
        for k, label in (("target_flops_ratio", "FLOPs ratio"), ("target_speedup", "speedup"))
        if p.get(k)
    ]
    return name + (f", budget: {' and '.join(budget)}" if budget else "")


def section_speed(dirs: list[Path], out_dir: Path) -> str:
    """Accuracy vs speed of the prune runs that had a latency table: predicted along the way, measured at the end."""
    lines, curves = [], []
    for d in dirs:
        s = runs.read_summary(d, "prune")
        rows = [r for r in runs.read_csv(d / "trajectory.csv") if r["status"] != "reverted"]
        if not rows or any(r.get("predicted_ms") in ("", None) for r in rows):
            continue
        base = float(rows[0]["predicted_ms"])
        measured = (s.get("measured") or {}).get("speedup")
        curves.append(
            {
                "name": f"{run_name(d)}: {method_name(s['prune'])}",
                "measured": measured,
                "speedups": [base / float(r["predicted_ms"]) for r in rows],
                "tests": [float(r["test_accuracy"]) for r in rows],
            }
        )
        eager = (s.get("measured") or {}).get("speedup_by_engine", {}).get("eager")
        lines.append(
            f"| `{run_name(d)}` | {method_name(s['prune'])} | {widths(s['after']['arch'])} | "
            f"{s['flops_ratio']:.2f}x | {base / float(rows[-1]['predicted_ms']):.2f}x | "
            f"{f'{measured:.2f}x' if measured else 'not benched'} | {f'{eager:.2f}x' if eager else '-'} | "
            f"{pct(s['after']['test_accuracy'])} |"
        )
    if not curves:
        return ""
    study_ratio = totals(preset("medium"))["study_flops"] / totals(pruned_arch())["study_flops"]
    plot = speed_frontier(curves, (STUDY["speedup"], STUDY["pruned_test_accuracy"]), out_dir / "speed_frontier.png")
    return "\n".join(
        [
            "### Accuracy vs measured speed\n",
            "Predicted speedups come from the per-layer latency table (`python -m fmnist.latency`), measured ones from "
            "`fmnist.bench` (each model on its fastest engine; eager: both in plain PyTorch, as the study timed).\n",
            "| run | method | (c1, c2, f1) | FLOPs ratio | predicted speedup | measured speedup | eager | test (%) |",
            "|---|---|---|---|---|---|---|---|",
            *lines,
            f"| study | norm, no fine-tuning | {STUDY['pruned_widths']} | {study_ratio:.2f}x | - "
            f"| ~{STUDY['speedup']}x (eager) | - | {pct(STUDY['pruned_test_accuracy'])} |\n",
            f"![accuracy vs speed]({plot})\n",
        ]
    )


def section_prune(dirs: list[Path]) -> str:
    out = ["## 4. Pruning\n"]
    if not dirs:
        return "\n".join(out) + missing("no prune run", "python -m fmnist.prune")
    medium_flops, study_flops = totals(preset("medium"))["study_flops"], totals(pruned_arch())["study_flops"]
    out += [
        "| run | method | (c1, c2, f1) | FLOPs before → after | FLOPs ratio | val (%) | test (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    points = []
    for d in dirs:
        s = runs.read_summary(d, "prune")
        a, b, p = s["after"], s["before"], s["prune"]
        method = (
            method_name(p)
            + f", tolerance {p['tolerance']}"
            + (f", fine-tune {p['finetune_epochs']} epoch/step" if p["finetune_epochs"] else ", no fine-tuning (study)")
            + (f", final fine-tune {p['final_finetune_epochs']} epochs" if p.get("final_finetune_epochs") else "")
        )
        arch = widths(a["arch"])
        out.append(
            f"| `{run_name(d)}` | {method} | {arch} | {b['study_flops']:,} → {a['study_flops']:,} | "
            f"{s['flops_ratio']:.2f}x | {pct(a['val_accuracy'])} | {pct(a['test_accuracy'])} |"
        )
        for r in runs.read_csv(d / "trajectory.csv"):
            if r["status"] != "reverted":
                points.append(
                    {
                        "run": run_name(d),
                        "study_flops": int(r["study_flops"]),
                        "test_accuracy": float(r["test_accuracy"]),
                        "arch": f"({r['conv1_channels']}, {r['conv2_channels']}, {r['fc1_size']})",
                    }
                )
    out.append(
        f"| study | norm, no fine-tuning | {STUDY['pruned_widths']} | {medium_flops:,} → {study_flops:,} | "
        f"{medium_flops / study_flops:.2f}x | - | {pct(STUDY['pruned_test_accuracy'])} |\n"
    )
    for d in dirs:
        for name in ("prune_accuracy_vs_step.png", "prune_accuracy_vs_flops.png"):
            if (d / name).exists():
                out.append(f"![{run_name(d)} {name}]({d / name})\n")
    out.append(_prune_over_seeds(dirs))
    out += [
        "### Accuracy-vs-FLOPs frontier of the pruned models\n",
        "Every kept step of every prune run above; a model is on the frontier when no other has both fewer "
        "FLOPs and higher test accuracy.\n",
        "| FLOPs/img | (c1, c2, f1) | test (%) | run |",
        "|---|---|---|---|",
    ]
    for p in _frontier(points):
        out.append(f"| {p['study_flops']:,} | {p['arch']} | {pct(p['test_accuracy'])} | `{p['run']}` |")
    return "\n".join(out) + "\n"


def _prune_over_seeds(dirs: list[Path]) -> str:
    """Prune runs of one method from one checkpoint that differ only in trainer.seed (fine-tuning's batch order),
    grouped: the final test accuracy as mean ± std [95 % t interval] (n) against the study's pruned model."""
    groups: dict[str, list[dict]] = {}
    for d in dirs:
        s = runs.read_summary(d, "prune")
        if "seed" in s:  # written since prune recorded its seed
            groups.setdefault(json.dumps(prune_key(s), sort_keys=True), []).append(s)  # as fmnist.seeds groups
    rows, seed = [], operator.itemgetter("seed")
    for group in groups.values():
        if len({s["seed"] for s in group}) < 2:
            continue
        test = interval([s["after"]["test_accuracy"] for s in group], bounds=ACCURACY)
        ratios = [s["flops_ratio"] for s in group]
        seeds = ", ".join(str(s["seed"]) for s in sorted(group, key=seed))
        used = used_precision(group[0])
        rows.append(
            f"| {method_name(group[0]['prune'])}{'' if used == 'fp32' else f' ({used})'} | {seeds} | "
            f"{', '.join(sorted({str(widths(s['after']['arch'])) for s in group}))} | "
            f"{statistics.fmean(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {quoted(test)} | "
            f"{against(test, STUDY['pruned_test_accuracy'])} |"
        )
    if not rows:
        return ""
    return "\n".join(
        [
            "### Over fine-tuning seeds\n",
            "Prune runs of one method from one checkpoint that differ only in `trainer.seed` (the fine-tuning's batch "
            "order): test accuracy as mean ± std [95 % t interval] (n), against the study's 87.62 % (above only where "
            "the interval's lower end is above it).\n",
            "| method | seeds | (c1, c2, f1) | FLOPs ratio, mean (range) | test (%) | against the study's |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *_cost_pairs(list(groups.values())),
        ]
    )


def _cost_pairs(groups: list[list[dict]]) -> list[str]:
    """Latency-aware against FLOPs-aware selection: two groups from one checkpoint whose prune settings differ only
    in prune.cost (the same budget), compared seed by seed: test accuracy's difference with its 95 % t interval, and
    each side's predicted and (where benched) measured speedup."""
    lines = []
    for a in groups:
        for b in groups:
            pa, pb = a[0]["prune"], b[0]["prune"]
            same = {k: v for k, v in pa.items() if k != "cost"} == {k: v for k, v in pb.items() if k != "cost"}
            if not (
                pa.get("cost") == "latency"
                and pb.get("cost") == "flops"
                and same
                and a[0]["source_checkpoint"] == b[0]["source_checkpoint"]
                and used_precision(a[0]) == used_precision(b[0])
            ):
                continue
            by_seed = [{s["seed"]: s["after"]["test_accuracy"] for s in g} for g in (b, a)]
            if not set(by_seed[0]) & set(by_seed[1]):
                continue
            d = paired(*by_seed)  # latency - flops
            lines += [
                "### Latency-aware against FLOPs-aware selection\n",
                f"The same budget ({method_name(pa).split('budget: ')[-1]}), the same checkpoint and seeds "
                f"{', '.join(map(str, d['paired_by']))}: test accuracy, latency-aware minus FLOPs-aware, "
                f"{quoted_difference(d)}.\n",
                "| selection | test (%) | predicted speedup | measured speedup |",
                "|---|---|---|---|",
                *[
                    f"| by {g[0]['prune']['cost']} | "
                    f"{quoted(interval([s['after']['test_accuracy'] for s in g], bounds=ACCURACY))} | "
                    f"{_speedups([s.get('predicted_speedup') for s in g])} | "
                    f"{_speedups([(s.get('measured') or {}).get('speedup') for s in g])} |"
                    for g in (a, b)
                ],
                "",
            ]
    return lines


def _speedups(values: list[float | None]) -> str:
    """Speedups of a group's runs as mean [interval] (n); runs without one (not benched) left out."""
    values = [v for v in values if v]
    return _ratio_cell(interval(values)) if values else "not benched"


def _ratio_cell(s: dict) -> str:
    if s["low"] is None:
        return f"{s['mean']:.2f}x (n=1)"
    return f"{s['mean']:.2f}x [{s['low']:.2f}, {s['high']:.2f}] (n={s['n']})"


def _speedup_cell(r: dict, engine: str) -> str:
    """A bench's speedup ("fastest": each model on its fastest engine) with its 95 % interval over the bench's rounds;
    the median alone where the bench has no interval (one round, or a bench from before intervals)."""
    i = (r.get("speedup_interval") or {}).get(engine)
    if i and i["low"] is not None:
        return _ratio_cell({**i, "mean": i["ratio"]})
    return f"{r['speedup'] if engine == 'fastest' else r['speedup_by_engine'][engine]:.2f}x"


def section_bench(dirs: list[Path]) -> str:
    out = [
        "## 5. Inference\n",
        "FLOPs per image, the study's formula generalized to any kernels (h1 = 29 - k1, h2 = h1 - k2 + 1):\n",
        "`conv1 h1·h1·(1·k1·k1)·c1 + 2·c1·h1·h1 + conv2 h2·h2·(c1·k2·k2)·c2 + 2·c2·h2·h2 + fc1 f1·(h2·h2·c2) + 2·f1 "
        "+ fc2 f1·10` (multiply-adds counted once; bias and ReLU once each).\n",
    ]
    if not dirs:
        return "\n".join(out) + missing("no bench run", "python -m fmnist.bench")
    out += [
        "Seconds and speedup compare each model on its fastest engine (`bench.engines`); the eager column is "
        "both models in plain PyTorch, as the study timed them. Seconds are medians over the bench's rounds; a "
        "speedup is the geometric mean of the per-round ratios with its 95 % interval (paired by round) and the "
        "number of rounds.\n",
        "| bench | original → pruned (c1, c2, f1) | seconds over the images | speedup | eager speedup "
        "| FLOPs ratio | study | batch, fastest engines | threads | machine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in dirs:
        r = runs.read_summary(d, "bench")
        o, p = r["original"], r["pruned"]
        eager = _speedup_cell(r, "eager") if "eager" in r["speedup_by_engine"] else "not run"
        engines = f"{o['engine']} / {p['engine']}"
        out.append(
            f"| `{run_name(d)}` | {widths(o['arch'])} → {widths(p['arch'])} | {o['seconds']:.2f} → "
            f"{p['seconds']:.2f} ({r['images']} images) | {_speedup_cell(r, 'fastest')} | {eager} | "
            f"{r['flops_ratio']:.2f}x | ~{STUDY['speedup']}x | {r['batch_size']}, {engines} | {r['threads']} | "
            f"{r['cpu']}, {r['device']}, torch {r['torch']} |"
        )
    decomposed = [(d, r["decomposition"]) for d in dirs if (r := runs.read_summary(d, "bench")).get("decomposition")]
    if decomposed:
        out += [
            f"\nThe study's ~{STUDY['speedup']}x decomposed: the original in eager fp32 (the study's way) → the "
            "original on the deployment engine → the pruned model on it → the pruned model in int8; each factor a "
            "per-round ratio with its 95 % interval (n rounds). The ceiling: the narrowest network of the same "
            "kernels, (1, 1, 1), timed in the same rounds: no pruning gives more than original / it on the "
            "deployment engine, nor in all than the eager original / it on its fastest engine.\n",
            "| bench | deployment engine | engine | pruning | int8 | total | test: original → pruned → int8 "
            "| ceiling: pruning / total |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for d, dec in decomposed:
            cells = [_ratio_cell({**i, "mean": i["ratio"]}) for i in dec["steps"].values()]
            cells += ["-"] * (3 - len(cells))
            test = " → ".join(f"{100 * a:.2f} %" for a in dec["test_accuracy"].values())
            total = _ratio_cell({**dec["total"], "mean": dec["total"]["ratio"]})
            c = dec.get("ceiling")
            ceiling = (
                " / ".join(_ratio_cell({**c[k], "mean": c[k]["ratio"]}) for k in ("pruning", "total"))
                + f" ({c['engine']})"
                if c
                else "-"
            )
            out.append(f"| `{run_name(d)}` | {dec['deploy']} | {' | '.join(cells)} | {total} | {test} | {ceiling} |")
    return "\n".join(out) + "\n"


def build(found: dict, out_dir: Path, top: int = 3) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        "# Fashion-MNIST CNN study, reproduced\n",
        f"Built by `python -m fmnist.report` on {time.strftime('%Y-%m-%d %H:%M')} from the outputs named in each "
        "section. Study figures are the published reference values; every other number is read from run outputs.\n",
        section_basic(found["basic"]),
        section_sweep(found["sweep"], top),
        section_finish(found.get("finish")),
        section_compare(found["compare"]),
        section_findings(found["compare"], found["sweep"], found.get("findings")),
        section_prune(found["prune"]),
        section_speed(found["prune"], out_dir),
        section_bench(found["bench"]),
    ]
    md = _local_images("\n".join(sections), out_dir)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(_html(md, out_dir))
    return out_dir / "report.md"


IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+\.png)\)")


def _local_images(md: str, out_dir: Path) -> str:
    """Each image the report links, copied into out_dir/images and linked relative to report.md: the plots live in
    the runs' folders under outputs/, which `make results` does not copy (and git does not track), so links to them
    break wherever the report folder goes."""
    folder = out_dir / "images"
    shutil.rmtree(folder, ignore_errors=True)  # only this report's own copies: an older build's must not linger
    folder.mkdir()
    names: dict[Path, str] = {}

    def local(match) -> str:
        src = Path(match.group(2)).resolve()
        if src.is_relative_to(out_dir.resolve()):  # written into the report folder itself (the speed frontier)
            return f"![{match.group(1)}]({src.relative_to(out_dir.resolve()).as_posix()})"
        if not src.exists():
            return match.group(0)
        if src not in names:
            names[src] = f"{len(names):02d}_{src.name}"  # numbered: every run's plots share a few file names
            shutil.copyfile(src, folder / names[src])
        return f"![{match.group(1)}](images/{names[src]})"

    return IMAGE.sub(local, md)


def _html(md: str, out_dir: Path) -> str:
    def embed(match):
        path = out_dir / match.group(2)
        data = base64.b64encode(path.read_bytes()).decode() if path.exists() else ""
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    body = markdown.markdown(IMAGE.sub(embed, md), extensions=["tables"])
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>fmnist report</title><style>{style}</style>"
        f"</head><body>{body}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("outputs"), help="where to look for outputs")
    parser.add_argument("--basic", type=Path, help="a medium training run folder")
    parser.add_argument("--sweep", type=Path, help="a sweep folder (with summary.csv and best.json)")
    parser.add_argument("--finish", type=Path, help="a fmnist.retrain --top folder (with finish.md)")
    parser.add_argument("--compare", type=Path, nargs="*", help="one-factor multirun folders")
    parser.add_argument("--findings", type=Path, help="a fmnist.findings results folder (e.g. results/findings)")
    parser.add_argument("--prune", type=Path, nargs="*", help="prune run folders")
    parser.add_argument("--bench", type=Path, nargs="*", help="bench run folders")
    parser.add_argument("--top", type=int, default=3, help="trials in the sweep table")
    parser.add_argument("--out", type=Path, help="output folder (default ROOT/report/<date>_<time>)")
    args = parser.parse_args(argv)
    if args.findings and not (args.findings / "findings.json").is_file():
        raise SystemExit(
            f"fmnist.report: --findings {args.findings} has no findings.json: give the folder `python -m "
            "fmnist.findings` writes (findings.results, e.g. results/findings)"
        )
    found = discover(args.root)
    for key in ("basic", "sweep", "finish", "compare", "findings", "prune", "bench"):
        if getattr(args, key) is not None:
            found[key] = getattr(args, key)
    out = build(found, args.out or args.root / "report" / time.strftime("%Y-%m-%d_%H-%M-%S"), args.top)
    print(f"{out}\n{out.with_suffix('.html')}")


if __name__ == "__main__":
    main()
