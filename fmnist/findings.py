"""The study's findings at its own budget: `python -m fmnist.findings [findings.key=value ...]` (`make findings`).

One-factor runs from the medium model as the study trained it (conf/findings.yaml: 40 epochs, every training image),
each factor's values over findings.seeds seeds, then more seeds (up to findings.more_seeds) for the settings of any
claim still not settled; each of the study's six sentences judged on every run (fmnist/analysis/findings.py: diverged
runs counted, "about the same" as equivalence).

Resumable across sessions: each finished run's record (its seed, how it ended, its accuracy curve) is written to
findings.results/runs/<setting>/seed<S>.json, the small file that is committed; a run recorded there is never trained
again, a cut one resumes from its last.pt under findings.out. findings.train=false only records what has finished and
judges. Writes findings.results/<findings.page>.md and .json (the page: findings.md) and plots/<factor>.png (mean
validation accuracy per epoch with its 95 % band, per value). A narrowed findings.factors names its own page (its
plots under <page>.plots/): it is refused a page that judges more factors, which it would cut down.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from fmnist.analysis.findings import CLAIMS, arms, hours_by_cpu, judge, record, verdict_table, wall_seconds
from fmnist.analysis.plots import _pyplot
from fmnist.core import runs
from fmnist.core.checks import check, integer, number
from fmnist.core.errors import ConfigError, one_line_errors
from fmnist.core.machine import cpu_name
from fmnist.core.stats import interval
from fmnist.core.study import preset
from fmnist.training.jobs import launch

log = logging.getLogger(__name__)
PRESETS = ("small", "medium", "large")


def check_findings(f: DictConfig) -> None:
    integer(f.seeds, "findings.seeds", 2, None, " (a verdict needs an interval)")
    integer(f.more_seeds, "findings.more_seeds", f.seeds)
    integer(f.jobs, "findings.jobs")
    number(f.margin, "findings.margin", 0, 1, low_open=True)
    if not isinstance(f.factors, DictConfig) or not f.factors:
        raise ConfigError(f"findings.factors={f.factors}: give key -> list of values, e.g. optimizer.lr: [0.1, 0.01]")
    for key, values in f.factors.items():
        if key not in f.base:
            raise ConfigError(f"findings.factors.{key}: not in findings.base; give its base value there too")
        if not isinstance(values, ListConfig) or len(values) < 2:
            raise ConfigError(f"findings.factors.{key}={values}: give two or more values to compare")
    if f.base.model not in PRESETS or ("model" in f.factors and any(v not in PRESETS for v in f.factors.model)):
        raise ConfigError(f"findings: model values are presets of conf/model/: {', '.join(PRESETS)}")
    for key, c in (f.get("confirm") or {}).items():
        if key not in f.factors:
            continue  # a narrowed findings.factors: that comparison is not run this time
        if not isinstance(c, DictConfig):
            raise ConfigError(f"findings.confirm.{key}={c}: give {{values: [two of its values], seeds: N}}")
        integer(c.get("seeds"), f"findings.confirm.{key}.seeds", f.more_seeds + 1, fix=" (more than more_seeds)")
        values = c.get("values")
        if not isinstance(values, ListConfig) or len(values) != 2 or any(v not in f.factors[key] for v in values):
            raise ConfigError(
                f"findings.confirm.{key}.values={values}: give two of findings.factors.{key} {list(f.factors[key])}"
            )


def check_page(f: DictConfig) -> None:
    """The page this run writes must not judge factors it leaves out: before any run trains, so a narrowed
    findings.factors is refused in one line instead of cutting the committed page down to its own claims."""
    if not isinstance(f.page, str) or not f.page or "/" in f.page:
        raise ConfigError(f"findings.page={f.page}: give a file name without a folder, e.g. findings.page=lr")
    page = Path(f.results) / f"{f.page}.json"
    judged = {c["key"] for c in json.loads(page.read_text())["claims"]} if page.exists() else set()
    if left := sorted(judged - set(f.factors)):
        raise ConfigError(
            f"findings.factors: {page.with_suffix('.md')} also judges {', '.join(left)}, which this run would drop; "
            f"give findings.page=<another name> to write its page beside it"
        )


def overrides(setting: dict) -> list[str]:
    """A setting's training overrides: a model preset expands to its architecture keys (the jobs are configs of
    keys, not group choices); the preset's own init unless the setting names one."""
    out = {f"model.{k}": v for k, v in preset(setting["model"]).items()}
    out.update({k: v for k, v in setting.items() if k != "model"})
    return [f"{k}={'null' if v is None else v}" for k, v in out.items()]


def settings(f: DictConfig) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every setting to train (name -> its keys) and each factor's values -> setting name. A factor's value equal to
    the base's is the base run, shared by every factor."""
    base = OmegaConf.to_container(f.base)
    named, by_factor = {"base": base}, {}
    for key, values in f.factors.items():
        by_factor[key] = {}
        for value in values:
            name = "base" if value == base[key] else f"{key}={value}"
            named.setdefault(name, {**base, key: value})
            by_factor[key][value] = name
    return named, by_factor


def record_path(results: Path, name: str, seed: int) -> Path:
    return results / "runs" / name / f"seed{seed}.json"


def train(f: DictConfig, named: dict[str, dict], wanted: list[tuple[str, int]], longest_first: bool = True) -> None:
    """Train the (setting, seed) runs not recorded yet (longest first: the smallest batches, the large model; else in
    the order given), record what finished."""
    out, results = Path(f.out), Path(f.results)
    jobs = [
        (f"{name}/seed{seed}", [*overrides(named[name]), f"trainer.seed={seed}"])
        for name, seed in wanted
        if not record_path(results, name, seed).exists()
    ]
    if longest_first:
        jobs.sort(key=lambda job: _steps(named[job[0].split("/")[0]]), reverse=True)
    if jobs and f.train:
        log.info("findings: %d runs to train, %d at a time, under %s", len(jobs), f.jobs, out)
        launch(jobs, out, f.jobs, list(f.extra), name="findings")
    collect(f, named)


def _steps(setting: dict) -> float:
    """A run's relative cost, to start the longest first: its steps per epoch, the large model counted twice."""
    return (55_000 / setting["data.batch_size"]) * (2 if setting["model"] == "large" else 1)


def collect(f: DictConfig, named: dict[str, dict]) -> int:
    """Write the record of every finished run under findings.out that is not recorded yet; how many were new."""
    out, results, new = Path(f.out), Path(f.results), 0
    for name in named:
        for run_dir in sorted((out / name).glob("seed*")):
            path = record_path(results, name, int(run_dir.name.removeprefix("seed")))
            if path.exists() or not runs.summary_of(run_dir, "train"):
                continue  # recorded already, or cut or still running
            run = record(run_dir)
            runs.write_json({"setting": name, **run, "cpu": run["cpu"] or cpu_name()}, path)
            new += 1
    return new


def recorded(f: DictConfig) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(f.results) / "runs").glob("*/seed*.json"))]


def confirmations(f: DictConfig, by_factor: dict, records: list[dict]) -> dict[str, dict]:
    """Each findings.confirm comparison of a factor being run: key -> its two values, their settings, its seeds, the
    (setting, seed) runs it needs, and how many of them are recorded."""
    have = {(r["setting"], r["seed"]) for r in records}
    out = {}
    for key, c in (f.get("confirm") or {}).items():
        if key in by_factor:
            names = [by_factor[key][v] for v in c["values"]]
            # seed by seed: the two runs of a pair train side by side and end together
            runs_needed = [(name, seed) for seed in range(c["seeds"]) for name in names]
            recorded_ = sum(run in have for run in runs_needed)
            out[key] = {"values": list(c["values"]), "seeds": c["seeds"], "runs": runs_needed, "recorded": recorded_}
    return out


def counted(records: list[dict], by_factor: dict, more_seeds: int, confirmed: dict) -> dict[str, list[dict]]:
    """Per factor, the runs its claims and plot count: seeds below more_seeds, and for a confirmation's two settings
    seeds below its fixed number once every run it needs is recorded. Until then a confirmation's runs are not looked
    at (the comparison is judged once, at the number fixed beforehand), and the base's extra seeds (it is a setting of
    every factor) enter only the confirmation that asked for them."""
    out = {}
    for key, values in by_factor.items():
        c = confirmed.get(key)
        done = {name for name, _ in c["runs"]} if c and c["recorded"] == len(c["runs"]) else set()
        out[key] = [
            r
            for r in records
            if r["setting"] in values.values() and r["seed"] < (c["seeds"] if r["setting"] in done else more_seeds)
        ]
    return out


def verdicts(per_key: dict[str, list[dict]], margin: float, confirmed: dict, more_seeds: int) -> list[dict]:
    """The claims judged on the runs each factor counts; a confirmation's progress said in its claim's figure."""
    final = frozenset(key for key, c in confirmed.items() if c["recorded"] == len(c["runs"]))
    judged = judge({key: arms(found, key) for key, found in per_key.items()}, margin, final)
    for claim in judged:
        c = confirmed.get(claim["key"])
        if not c:
            continue
        a, b = c["values"]
        fixed = f"{a} vs {b} at {c['seeds']} seeds, a number fixed from the spread at {more_seeds} before any more ran"
        if claim["key"] in final:
            claim["figure"] += f"; judged once, {fixed}"
        else:
            claim["figure"] += (
                f"; {fixed}: {c['recorded']} of {len(c['runs'])} runs recorded, judged once all are (until then, "
                f"as at {more_seeds} seeds)"
            )
    return judged


def findings(cfg: DictConfig) -> dict:
    f = check(cfg, findings=check_findings).findings
    check_page(f)
    started = time.perf_counter()
    named, by_factor = settings(f)
    train(f, named, [(name, seed) for name in named for seed in range(f.seeds)])
    records = recorded(f)
    confirmed = confirmations(f, by_factor, records)
    judged = verdicts(counted(records, by_factor, f.more_seeds, confirmed), f.margin, confirmed, f.more_seeds)
    # more seeds only for the settings an open claim compares, once each has every first seed (not where runs are
    # merely missing); a claim settled on the first seeds is not given more runs (its verdict would move with them)
    done = {r["setting"] for r in records if r["seed"] == f.seeds - 1}
    open_claims = [c for c in judged if c["verdict"] == "not settled" and set(_compared(c, by_factor)) <= done]
    if f.train and open_claims and f.more_seeds > f.seeds:
        names = sorted({name for c in open_claims for name in _compared(c, by_factor)})
        log.info(
            "findings: not settled after %d seeds: %s; seeds up to %d for %s",
            f.seeds,
            "; ".join(c["claim"] for c in open_claims),
            f.more_seeds,
            ", ".join(names),
        )
        train(f, named, [(name, seed) for name in names for seed in range(f.more_seeds)])
        records = recorded(f)
    # then each confirmation's runs, the one with the fewest left first (a verdict sooner), pairs seed by seed
    confirmed = confirmations(f, by_factor, records)
    if f.train and confirmed:
        order = sorted(confirmed.values(), key=lambda c: len(c["runs"]) - c["recorded"])
        train(f, named, list(dict.fromkeys(run for c in order for run in c["runs"])), longest_first=False)
        records = recorded(f)
        confirmed = confirmations(f, by_factor, records)
    per_key = counted(records, by_factor, f.more_seeds, confirmed)
    judged = verdicts(per_key, f.margin, confirmed, f.more_seeds)
    by_cpu = per_cpu(records, lambda some: sum(r["seconds"] or 0 for r in some))
    timed = [r for r in records if r.get("spans")]
    result = {
        "claims": judged,
        "runs": len(records),
        "diverged": sum(r["status"] == "diverged" for r in records),
        "seconds_trained": sum(by_cpu.values()),
        "seconds_by_cpu": by_cpu,
        "precisions": sorted({r["precision"] for r in records}),
        "margin": f.margin,
        "confirm": {
            key: {"values": c["values"], "seeds": c["seeds"], "runs": len(c["runs"]), "recorded": c["recorded"]}
            for key, c in confirmed.items()
        },
        # the command's wall time: the runs span sessions (and machines), so it is the union of the runs' epochs on
        # the clock, per CPU, for the runs whose epochs carry their end times
        "wall_runs": len(timed),
        "wall_seconds_by_cpu": per_cpu(timed, wall_seconds),
        "invocation_seconds": time.perf_counter() - started,  # this invocation's own time
        # a narrowed page draws its own: its seeds may differ, and it must not redraw a figure the page links
        "plots": plots(per_key, by_factor, Path(f.results), "plots" if f.page == "findings" else f"{f.page}.plots"),
    }
    runs.write_json(result, Path(f.results) / f"{f.page}.json")
    runs.write_text(markdown(result, f), Path(f.results) / f"{f.page}.md")
    return result


def per_cpu(records: list[dict], measure) -> dict:
    """measure(the records of one CPU), per CPU that ran any of them."""
    return {
        cpu: measure([r for r in records if r.get("cpu") == cpu]) for cpu in sorted({r.get("cpu") for r in records})
    }


def _compared(claim: dict, by_factor: dict) -> list[str]:
    """The settings a judged claim compares: its values (CLAIMS) that its factor has."""
    (values,) = [vs for sentence, _, _, vs in CLAIMS if sentence == claim["claim"]]
    return [by_factor[claim["key"]][v] for v in values if v in by_factor[claim["key"]]]


def plots(per_key: dict[str, list[dict]], by_factor: dict, results: Path, folder: str) -> dict[str, str]:
    """Per factor: each value's mean validation accuracy per epoch over the seeds it counts, with its 95 % t band (the
    study's accuracy-vs-epoch figure, over seeds); a diverged run counts at the accuracy it reached. Written to
    results/folder/<factor>.png; returned as paths from results (the page's links)."""
    plt = _pyplot()
    made = {}
    for key, values in by_factor.items():
        records = per_key[key]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        drawn = False
        for value, name in values.items():
            curves = [r for r in records if r["setting"] == name]
            if not curves:
                continue
            epochs = max(r["max_epochs"] for r in curves)
            mean, low, high = [], [], []
            for e in range(epochs):
                at = [
                    (r["curve"][e] if e < len(r["curve"]) else r["curve"][-1])["val_accuracy"]
                    for r in curves
                    if r["curve"]
                ]
                s = interval(at)
                mean.append(100 * s["mean"])
                low.append(100 * (s["low"] if s["low"] is not None else s["mean"]))
                high.append(100 * (s["high"] if s["high"] is not None else s["mean"]))
            xs = range(1, epochs + 1)
            (line,) = ax.plot(xs, mean, label=f"{value} (n={len(curves)})")
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
            drawn = True
        if drawn:
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation accuracy (%)")
            ax.set_title(f"{key}: mean over seeds, 95 % band", fontsize=9)
            top = [line.get_ydata().max() for line in ax.get_lines()]
            ax.set_ylim(max(0, min(top) - 8) if min(top) > 50 else 0, math.ceil(max(top)) + 1)
            ax.legend(fontsize=7)
            (results / folder).mkdir(parents=True, exist_ok=True)
            fig.savefig(results / folder / f"{key}.png", dpi=100, bbox_inches="tight")
            made[key] = f"{folder}/{key}.png"
        plt.close(fig)
    return made


def markdown(result: dict, f: DictConfig) -> str:
    base = ", ".join(f"{k}={'null' if v is None else v}" for k, v in f.base.items())
    trained = (
        f"{result['runs']} runs recorded ({result['diverged']} diverged), {result['seconds_trained'] / 3600:.1f} "
        f"hours of training ({', '.join(result['precisions'])}), by the CPU that ran each: "
        + hours_by_cpu(result["seconds_by_cpu"])
        if result["runs"]
        else "no run recorded yet"
    )
    wall = (
        f"the command's wall time while they trained, measured for the {result['wall_runs']} whose epochs carry their "
        f"end times: {hours_by_cpu(result['wall_seconds_by_cpu'])}"
        if result["wall_runs"]
        else "the command's wall time is not measured (no run's epochs carry their end times)"
    )
    lines = [
        "# The study's findings at its own budget\n",
        f"One-factor runs from ({base}); {trained}; {wall}. Made by `make findings` (`python -m fmnist.findings`); "
        "each run's record is under `runs/`.\n",
        "Accuracies are validation accuracy where each run ended, a diverged run at the accuracy it reached; "
        "differences paired by seed with their 95 % t interval; divergence rates with their Wilson interval; "
        f'"about the same" by two one-sided tests within ±{100 * f.margin:.1f} points.\n',
        *verdict_table(result["claims"], result["plots"]),
    ]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="findings")
@one_line_errors
def main(cfg: DictConfig) -> None:
    result = findings(cfg)
    for c in result["claims"]:
        print(f"{c['verdict']:>14}  {c['claim']}: {c['figure']}")
    print(f"{result['runs']} runs recorded; {Path(cfg.findings.results) / cfg.findings.page}.md")


if __name__ == "__main__":
    main()
