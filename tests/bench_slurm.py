"""Benchmark (printed, not a timed test): the same 12-trial study under ASHA on a local one-node SLURM cluster with two
slots, both ways (trials as SLURM jobs through Hydra's submitit launcher, two per batch; two workers as one job
array), each as is and with one job cancelled mid-trial. Prints each run's wall time, how long slots sat idle
(2 x wall time - the trials' own time) and every trial's outcome; writes results/slurm/.

    python -m tests.bench_slurm [--out results/slurm]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import optuna

from fmnist.core.machine import cpu_name
from fmnist.search.storage import open_storage
from fmnist.search.trials import DUPLICATE
from tests.helpers import REPO
from tests.slurm import Cluster, first_run_after_one_epoch, missing

SLOTS = 2
STUDY = [  # the study's own search space (TPE, ASHA), on a small budget: 12 trials of up to 4 epochs
    "trainer.max_epochs=4",
    "data.subset=6000",
    "data.val_size=1000",
    "logger=none",
    "trainer.device=cpu",
    "trainer.threads=1",
    "hydra.sweeper.n_trials=12",
]


def run(cluster: Cluster, way: str, cancel: bool, out: Path) -> dict:
    name = f"{way}{'-cancel' if cancel else ''}"
    sweep = out / "runs" / name
    storage = f"journal://{sweep}/journal.log"
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
    return {"way": way, "cancelled": cancelled, "exit": code, "wall_s": round(wall, 1), **accounting(storage, wall)}


def accounting(storage: str, wall: float) -> dict:
    """Every trial's outcome, and the slots' busy and idle time. A repeated proposal answered with an earlier trial's
    outcome trained nothing and does not count toward n_trials (fmnist/search/sweeper.py): left out here too."""
    study = optuna.load_study(study_name="fmnist-study-grid", storage=open_storage(storage))
    trials = [t for t in study.trials if DUPLICATE not in t.system_attrs]
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    return {
        "trial_s": round(busy, 1),
        "repeated_proposals": len(study.trials) - len(trials),
        "idle_slot_s": round(SLOTS * wall - busy, 1),
        "idle_share": round(1 - busy / (SLOTS * wall), 3),
        "trials": states,
        "failed": [t.user_attrs.get("reason", "") for t in trials if t.state.name == "FAIL"]
        + [v for k, v in study.user_attrs.items() if k.startswith("fmnist:stale:")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "slurm")
    parser.add_argument("--recount", action="store_true", help="recount the last runs' trials (outputs/bench-slurm)")
    args = parser.parse_args()
    if not args.recount and (why := missing()):
        sys.exit(f"error: {why}")
    work = Path("outputs/bench-slurm").resolve()
    if args.recount:  # the runs' own journals again, with the wall times bench.json holds
        results = json.loads((args.out / "bench.json").read_text())["runs"]
        for r, name in zip(results, ("launcher", "launcher-cancel", "array", "array-cancel"), strict=True):
            r.update(accounting(f"journal://{work / 'runs' / name}/journal.log", r["wall_s"]))
    else:
        cluster = Cluster(cpus=SLOTS).start()
        try:
            results = [run(cluster, way, cancel, work) for way in ("launcher", "array") for cancel in (False, True)]
        finally:
            cluster.close()
    meta = {"cpu": cpu_name(), "slots": SLOTS, "python": platform.python_version(), "study": STUDY}
    lines = [
        f"# 12 trials under ASHA on a one-node SLURM cluster, {SLOTS} slots (one run each; {meta['cpu']})",
        "",
        "| way | job cancelled | wall s | trials' s | idle slot-s | idle | complete | pruned | failed (run again) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["trials"]
        lines.append(
            f"| {r['way']} | {r['cancelled'] or '-'} | {r['wall_s']} | {r['trial_s']} | {r['idle_slot_s']} | "
            f"{100 * r['idle_share']:.0f} % | {t['COMPLETE']} | {t['PRUNED']} | {t['FAIL']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    (args.out / "bench.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
