"""Benchmark (printed, not a timed test): the same 12-trial study under ASHA on a local one-node SLURM cluster with two
slots, both ways (trials as SLURM jobs through Hydra's submitit launcher, two per batch; two workers as one job
array). Each round draws 12 configurations of the study's grid (seeded by the round) and enqueues them in every run's
study before it starts, so both ways train the same configurations (TPE would propose other ones in each run, and the
walls would compare studies); the ways run in alternating order by round. The first --cancel-rounds rounds also run
each way with one job cancelled after its first epoch. Prints each run's wall time, how long slots sat idle
(2 x wall time - the epochs the runs' own logs timed), every trial's outcome, and the array's wall over the
launcher's paired by round; writes results/slurm/.

    python -m tests.bench_slurm [--rounds 3] [--cancel-rounds 1] [--out results/slurm]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from fmnist.core.machine import cpu_name
from fmnist.core.stats import interval, quoted, ratio
from fmnist.search.optuna_glue import distributions
from fmnist.search.storage import open_storage
from fmnist.search.trials import DUPLICATE
from tests.helpers import REPO
from tests.slurm import Cluster, first_run_after_one_epoch, missing

SLOTS = 2
N_TRIALS = 12
STUDY_NAME = "fmnist-study-grid"
STUDY = [  # the study's own search space (TPE, ASHA), on a small budget: N_TRIALS trials of up to 4 epochs
    "trainer.max_epochs=4",
    "data.subset=6000",
    "data.val_size=1000",
    "logger=none",
    "trainer.device=cpu",
    "trainer.threads=1",
    f"hydra.sweeper.n_trials={N_TRIALS}",
]


def configurations(seed: int) -> list[dict]:
    """N_TRIALS distinct configurations of the study's grid (conf/hparams_search/study_grid.yaml), drawn with `seed`."""
    params = OmegaConf.load(REPO / "conf/hparams_search/study_grid.yaml").hydra.sweeper.params
    rng, drawn, space = random.Random(seed), [], distributions(params)
    while len(drawn) < N_TRIALS:
        config = {k: rng.choice(d.choices) for k, d in space.items()}
        if config not in drawn:
            drawn.append(config)
    return drawn


def run(cluster: Cluster, way: str, cancel: bool, configs: list[dict], out: Path, name: str) -> dict:
    sweep = out / "runs" / name
    storage = f"journal://{sweep}/journal.log"
    sweep.mkdir(parents=True)
    # the sweeper loads this study and asks it for trials: Optuna hands out enqueued (WAITING) trials first
    study = optuna.create_study(study_name=STUDY_NAME, storage=open_storage(storage), direction="maximize")
    for config in configs:
        study.enqueue_trial(config)
    if way == "launcher":
        cmd = ["fmnist.train", "--multirun", *STUDY, "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1"]
        cmd += [f"hydra.sweeper.n_jobs={SLOTS}", f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"]
    else:
        cmd = ["fmnist.slurm_workers", "--workers", str(SLOTS), "--wait", *STUDY]
        cmd += [f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}"]
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", *cmd], cwd=REPO, env={**cluster.env, "WANDB_MODE": "disabled"})
    cancelled = None
    if cancel:
        folder = first_run_after_one_epoch(sweep)
        cancelled = f"{cluster.cancel_run(folder, storage if way == 'array' else None)} (trial {folder.name}, epoch 1)"
    code = proc.wait(timeout=3600)
    wall = time.time() - started
    result = {"name": name, "way": way, "cancelled": cancelled, "exit": code, "wall_s": round(wall, 1)}
    return result | accounting(sweep, wall)


EPOCH = re.compile(r" epoch \d+/\d+ .* (\d+\.\d+)s$", re.M)  # fmnist.training.run's line per epoch, its seconds last


def accounting(sweep: Path, wall: float) -> dict:
    """Every trial's outcome, and the slots' time: `trial_s` from each trial's start to its end in the study (for a
    trial as a SLURM job that includes submitting, scheduling and a new Python process), `epochs_s` the epochs the
    runs' own logs timed (training and evaluation), idle = slot time spent on no epoch. A repeated proposal answered
    with an earlier trial's outcome trained nothing and does not count toward n_trials (fmnist/search/sweeper.py):
    left out here too."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(f"journal://{sweep}/journal.log"))
    trials = [t for t in study.trials if DUPLICATE not in t.system_attrs]
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    # a cancelled trial's rerun continues in its folder: each folder's log is read once
    epochs = sum(float(x) for log in sweep.glob("[0-9]*/train.log") for x in EPOCH.findall(log.read_text()))
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    return {
        "trial_s": round(busy, 1),
        "epochs_s": round(epochs, 1),
        "repeated_proposals": len(study.trials) - len(trials),
        "idle_slot_s": round(SLOTS * wall - epochs, 1),
        "idle_share": round(1 - epochs / (SLOTS * wall), 3),
        "trials": states,
        "failed": [t.user_attrs["reason"] for t in trials if t.state.name == "FAIL" and t.user_attrs.get("reason")]
        + [v for k, v in study.user_attrs.items() if k.startswith("fmnist:stale:")],
    }


def summary(results: list[dict]) -> dict:
    """Per way over the rounds without a cancel: wall and idle share; the array's wall over the launcher's, paired by
    round (each round's two runs trained the same configurations)."""
    plain = [r for r in results if not r["cancelled"]]
    rounds = sorted({r["round"] for r in plain})
    by = {(r["round"], r["way"]): r for r in plain}
    ways = {
        way: {
            "wall_s": interval([by[k, way]["wall_s"] for k in rounds]),
            "idle_share": interval([by[k, way]["idle_share"] for k in rounds]),
        }
        for way in ("launcher", "array")
    }
    walls = [(by[k, "array"]["wall_s"], by[k, "launcher"]["wall_s"]) for k in rounds]
    return {"rounds": len(rounds), "ways": ways, "array_over_launcher_wall": ratio(*zip(*walls, strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "slurm")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways on one round's configurations")
    parser.add_argument("--cancel-rounds", type=int, default=1, help="the first K rounds also cancel one job per way")
    parser.add_argument("--recount", action="store_true", help="recount the last runs' trials (outputs/bench-slurm)")
    args = parser.parse_args()
    if args.rounds < 1 or not 0 <= args.cancel_rounds <= args.rounds:
        sys.exit("error: --rounds must be at least 1 and --cancel-rounds between 0 and --rounds")
    if not args.recount and (why := missing()):
        sys.exit(f"error: {why}")
    work = Path("outputs/bench-slurm").resolve()
    if args.recount:  # the runs' own journals again, with the wall times bench.json holds
        results = json.loads((args.out / "bench.json").read_text())["runs"]
        for r in results:
            r.update(accounting(work / "runs" / r["name"], r["wall_s"]))
    else:
        if (work / "runs").exists():
            sys.exit(f"error: {work / 'runs'} holds an earlier bench's runs: move or delete it first")
        cluster, results = Cluster(cpus=SLOTS).start(), []
        try:
            for k in range(args.rounds):
                configs = configurations(k)
                ways = ("launcher", "array") if k % 2 == 0 else ("array", "launcher")
                for cancel in (False, True) if k < args.cancel_rounds else (False,):
                    for way in ways:
                        name = f"{k}-{way}{'-cancel' if cancel else ''}"
                        results.append({"round": k, **run(cluster, way, cancel, configs, work, name)})
                        print(json.dumps(results[-1]), flush=True)
        finally:
            cluster.close()
    meta = {"cpu": cpu_name(), "slots": SLOTS, "python": platform.python_version(), "study": STUDY}
    meta["configurations"] = f"{N_TRIALS} per round, drawn from the study's grid with random.Random(round), enqueued"
    s = summary(results)
    w, a = s["ways"], s["array_over_launcher_wall"]
    lines = [
        f"# {N_TRIALS} trials under ASHA on a one-node SLURM cluster, {SLOTS} slots ({meta['cpu']})",
        "",
        f"Both ways trained the same {N_TRIALS} configurations in each round (enqueued); {s['rounds']} rounds, ways "
        "in alternating order. Without a cancel, mean ± std [95 % interval] over rounds:",
        "",
        "| way | wall s | slot time on no epoch, % |",
        "|---|---|---|",
        f"| launcher (trials as jobs, batches of {SLOTS}) | {quoted(w['launcher']['wall_s'], 1, 1)} | "
        f"{quoted(w['launcher']['idle_share'], 100, 0)} |",
        f"| array ({SLOTS} workers as one job array) | {quoted(w['array']['wall_s'], 1, 1)} | "
        f"{quoted(w['array']['idle_share'], 100, 0)} |",
        "",
        f"Array wall / launcher wall, paired by round: {a['ratio']:.2f}x"
        + (f" [{a['low']:.2f}, {a['high']:.2f}] (n={a['n']})" if a["low"] is not None else " (n=1)"),
        "",
        "| round | way | cancelled | wall s | trials' s | epochs' s | idle slot-s | idle "
        "| complete | pruned | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["trials"]
        lines.append(
            f"| {r['round']} | {r['way']} | {r['cancelled'] or '-'} | {r['wall_s']} | {r['trial_s']} | "
            f"{r['epochs_s']} | {r['idle_slot_s']} | {100 * r['idle_share']:.0f} % | {t['COMPLETE']} | {t['PRUNED']} | "
            f"{t['FAIL']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    (args.out / "bench.json").write_text(json.dumps({"meta": meta, "summary": s, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
