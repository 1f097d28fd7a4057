"""Benchmark (printed, not a timed test): a 12-trial study on a real PostgreSQL with three workers, run twice: as is,
and with one worker on "another host" (its own UTS namespace) killed with -9 in the middle of a trial. Prints the
wall time of each and accounts for every trial (finished, failed as stale, run again); writes results/liveness/.

    python -m tests.bench_liveness [--out results/liveness] [--grace 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import time
from pathlib import Path

import optuna

from tests.helpers import REPO, wait_for, worker
from tests.postgres import Cluster, missing

GRID = ["optimizer.lr=0.01,0.001", "model.fc1_size=50,100", "model.conv1_channels=8,12,16"]  # 12 points


def run(cluster: Cluster, name: str, kill: bool, grace: int, folder: Path) -> dict:
    url = cluster.create_db(name)
    cmd = [
        "fmnist.train",
        "--multirun",
        "trainer.max_epochs=3",
        "trainer.threads=1",
        "data.subset=6000",
        "data.val_size=1000",
        "logger=none",
        "trainer.device=cpu",
        f"hydra.sweep.dir={folder / name}",
        "hydra.sweeper.params=null",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        f"hydra.sweeper.storage='{url}'",
        "hydra.sweeper.n_trials=12",
        "hydra.sweeper.heartbeat_interval=2",
        f"hydra.sweeper.grace_period={grace}",
        *GRID,
    ]
    started = time.time()
    workers = [worker(cmd, host="otherhost"), worker(cmd), worker(cmd)]
    killed = None
    if kill:

        def remote_trial():
            try:
                running = optuna.load_study(study_name="fmnist-study-grid", storage=url).get_trials(
                    states=(optuna.trial.TrialState.RUNNING,)
                )
            except KeyError:
                return None
            return next((t for t in running if t.system_attrs.get("fmnist:worker", "").startswith("otherhost:")), None)

        seen = {}  # the trial as found running: asked again after the wait, it may have ended meanwhile

        def one_epoch_done() -> bool:
            seen["trial"] = remote_trial()
            return bool(seen["trial"]) and (folder / name / str(seen["trial"].number) / "metrics.csv").exists()

        wait_for(one_epoch_done, what="the remote worker's first epoch")
        killed = seen["trial"].number
        workers[0].send_signal(signal.SIGKILL)
    codes = [w.wait(timeout=3600) for w in workers]
    wall = time.time() - started
    trials = optuna.load_study(study_name="fmnist-study-grid", storage=url).get_trials()
    stale = sorted({n for t in trials for n in t.system_attrs.get("retry_history", [])})
    return {
        "kill": kill,
        "wall_seconds": round(wall, 1),
        "exit_codes": codes,
        "killed_trial": killed,
        "trials": len(trials),
        "states": {
            s.name: sum(t.state == s for t in trials)
            for s in optuna.trial.TrialState
            if any(t.state == s for t in trials)
        },
        "failed_as_stale": stale,
        "run_again_as": {n: [t.number for t in trials if n in t.system_attrs.get("retry_history", [])] for n in stale},
        "counted": sum(t.state.is_finished() and t.number not in stale for t in trials),
        "distinct_configurations": len({tuple(sorted(t.params.items())) for t in trials if t.number not in stale}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "liveness")
    parser.add_argument("--grace", type=int, default=10, help="hydra.sweeper.grace_period, seconds")
    args = parser.parse_args()
    if missing():
        raise SystemExit(f"error: {missing()}")
    cluster = Cluster().start()
    folder = cluster.root / "sweeps"
    try:
        results = [run(cluster, "nokill", False, args.grace, folder), run(cluster, "kill", True, args.grace, folder)]
    finally:
        cluster.close()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    report = {"cpu": cpu, "cores": os.cpu_count(), "grace_period": args.grace, "heartbeat_interval": 2, "runs": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"12 trials x 3 epochs, grid sampler, no pruner, three workers on one PostgreSQL ({cpu}, {os.cpu_count()} "
        f"cores); heartbeat every 2 s, grace period {args.grace} s.",
        "",
        "| run | wall s | trials | states | failed as stale -> run again as | counted | distinct |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stale = ", ".join(f"{n} -> {r['run_again_as'][n]}" for n in r["failed_as_stale"]) or "none"
        what = "one worker killed -9 mid-trial" if r["kill"] else "no kill"
        lines.append(
            f"| {what} | {r['wall_seconds']} | {r['trials']} | {r['states']} | {stale} | {r['counted']} | "
            f"{r['distinct_configurations']} |"
        )
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
