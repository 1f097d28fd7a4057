"""A sweep's workers as one SLURM job array: `python -m fmnist.slurm_workers --workers N [--partition P] [--cpus C]
[--time MIN] [--wait] OVERRIDES...`

Writes `<sweep dir>/slurm/workers.sbatch`, N copies of one sweep worker (`python -m fmnist.train --multirun
OVERRIDES`, one trial at a time, C threads) on one study, and submits it with `sbatch --array=0-(N-1) --requeue`. Each
worker asks Optuna for the next trial the moment its own ends, so no slot waits for a batch's slowest trial (Hydra's
launchers do: hydra #2257). The study must live where every node reaches it: PostgreSQL, or Optuna's journal file on
a shared file system. A task SLURM cancels mid-trial: its trial is failed as stale by a live worker (at once on the
same host, after the heartbeat grace period elsewhere) and its configuration runs again from last.pt; a requeued task
(`scontrol requeue`, preemption) starts the worker again, which fails its own unfinished trial at once and continues
it from last.pt (fmnist/search/liveness.py, fmnist/search/sweeper.py). --wait: block until every task has ended.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from fmnist.core.errors import UserError
from fmnist.search import slurm
from fmnist.search.storage import where

CONF = Path(__file__).resolve().parent.parent / "conf"
SHARED = ("postgresql", "journal:///")  # storages several hosts can share; sqlite on a local disk cannot


def sweep_config(overrides: list[str]):
    """The sweep's composed config (its sweep dir and storage resolved once, here, for every worker). Sweep values
    (a,b or choice(...)) go to the workers as given; they do not decide where the study lives."""
    plain = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=plain, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} and ${now:...} resolve as in a run
    return cfg


def check(args, cfg) -> None:
    for name in ("workers", "cpus", "time"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name}={getattr(args, name)}: give a whole number >= 1")
    sweeper = cfg.hydra.sweeper
    if "n_trials" not in sweeper:
        raise UserError("the workers run fmnist's Optuna sweeper: drop ~hparams_search from the overrides")
    if sweeper.n_trials < 1:
        raise UserError(f"hydra.sweeper.n_trials={sweeper.n_trials}: a study needs at least one trial")
    storage = str(sweeper.storage or "")
    if not storage.startswith(SHARED):
        raise UserError(
            f"hydra.sweeper.storage={storage or None} cannot be shared by workers on several hosts (sqlite on a local "
            "disk): set hydra.sweeper.storage=postgresql://USER@HOST:PORT/DB (the postgres extra) or "
            "journal:///FILE on a file system every node mounts"
        )
    slurm.check("fmnist.slurm_workers", args.partition)


def batch_script(args, cfg, sweep_dir: Path) -> str:
    fixed = {  # the same folder and study for every worker (a default sweep dir would be each one's own time)
        "hydra.sweep.dir": sweep_dir,
        "hydra.sweeper.storage": cfg.hydra.sweeper.storage,
        "hydra.sweeper.n_jobs": 1,  # one trial at a time: a worker asks for the next when its own ends
        "trainer.threads": args.cpus,  # on the task's cores
    }
    keys = OverridesParser.create().parse_overrides(args.overrides)
    kept = [o.input_line for o in keys if o.key_or_group not in fixed]
    worker = [sys.executable, "-m", "fmnist.train", "--multirun", *kept, *(f"{k}={v}" for k, v in fixed.items())]
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=fmnist-workers",
        f"#SBATCH --array=0-{args.workers - 1}",
        f"#SBATCH --cpus-per-task={args.cpus}",
        f"#SBATCH --time={args.time}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",  # a requeued task adds to its log
        f"#SBATCH --output={sweep_dir}/slurm/worker-%A_%a.log",
        *([f"#SBATCH --partition={args.partition}"] if args.partition else []),
        "# written by python -m fmnist.slurm_workers: each task is one sweep worker on the shared study",
        f"cd {shlex.quote(str(Path.cwd()))}",
        "exec " + " ".join(shlex.quote(w) for w in worker),
    ]
    return "\n".join(lines) + "\n"


def running(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return bool(out.stdout.strip())


def submit(args) -> dict:
    cfg = sweep_config(args.overrides)
    check(args, cfg)
    sweep_dir = Path(cfg.hydra.sweep.dir).resolve()
    script = sweep_dir / "slurm" / "workers.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(batch_script(args, cfg, sweep_dir))
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise UserError(f"sbatch refused {script}: {(done.stderr or done.stdout).strip().splitlines()[0]}")
    job_id = done.stdout.strip().split(";")[0]
    study = f"study {cfg.hydra.sweeper.study_name} at {where(str(cfg.hydra.sweeper.storage))}"
    print(f"submitted job array {job_id}: {args.workers} workers on {study}; batch script {script}")
    print(f"follow it: squeue -j {job_id}; logs {sweep_dir}/slurm/worker-{job_id}_*.log; table {sweep_dir}/summary.md")
    if args.wait:
        while running(job_id):
            time.sleep(2)
        print(f"job array {job_id} ended: {sweep_dir}/summary.md")
    return {"job_id": job_id, "script": str(script), "sweep_dir": str(sweep_dir)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, required=True, help="array tasks: sweep workers side by side")
    parser.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    parser.add_argument("--cpus", type=int, default=1, help="cores per worker (its trainer.threads)")
    parser.add_argument("--time", type=int, default=60, help="minutes per task (SLURM's time limit)")
    parser.add_argument("--wait", action="store_true", help="return when every task has ended")
    parser.add_argument("overrides", nargs="*", help="the sweep's Hydra overrides, as for python -m fmnist.train -m")
    args = parser.parse_args(argv)
    try:
        submit(args)
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
