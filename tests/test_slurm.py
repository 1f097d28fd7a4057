"""The search on a real SLURM cluster (a throwaway one-node cluster, tests/slurm.py): trials as SLURM jobs through
Hydra's submitit launcher, and sweep workers as one job array, each with a job SLURM cancels, times out or requeues
mid-trial. Skipped, with the reason, where SLURM is not installed; .ci/run installs it, and there a skip fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from fmnist.search import liveness
from fmnist.search.storage import open_storage
from tests.bench_slurm import N_TRIALS, configurations, summary
from tests.helpers import read_rows, run_cli, sweep_cmd
from tests.postgres import free_port
from tests.slurm import Cluster, first_run_after_one_epoch, missing

# CI installs SLURM (.ci/run): there a missing one is a failure, not a skip
needs_slurm = pytest.mark.skipif(missing() is not None and os.environ.get("CI") != "true", reason=missing() or "")
try:
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401

    NO_LAUNCHER = None
except ImportError:
    NO_LAUNCHER = "no hydra-submitit-launcher: pip install -e '.[slurm]'"
needs_launcher = pytest.mark.skipif(
    NO_LAUNCHER is not None and os.environ.get("CI") != "true", reason=NO_LAUNCHER or ""
)
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "trainer.threads=1"]
FOUR = ["optimizer.lr=0.01,0.001", "optimizer.momentum=0.9,0.99", "hydra/sweeper/pruner=none"]  # 4 configurations


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(cpus=2).start()  # two slots
    yield c
    c.close()


def _sh(cluster, *cmd) -> str:
    return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=60, check=True).stdout


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="fmnist-study-grid", storage=open_storage(url))


def _epochs(folder) -> list[int]:
    return [int(r["epoch"]) for r in read_rows(folder / "metrics.csv")] if (folder / "metrics.csv").exists() else []


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def _job(cluster, task: str) -> dict[str, str]:
    """scontrol's record of a job or array task (kept MinJobAge=300 s after it ends): JobState, Reason, Restarts."""
    return dict(f.split("=", 1) for f in _sh(cluster, "scontrol", "-o", "show", "job", task).split() if "=" in f)


def _run_again_after_requeue(cluster, task: str, timeout: float = 600) -> dict[str, str]:
    """Wait until a requeued task has run again and ended, releasing the hold SLURM puts on a requeued job (a
    BeginTime minutes ahead) once it is pending. The task's own state and restart count say when, not squeue's list
    going empty: CI once found no trial complete after that list went empty, and no record of what the task did."""
    deadline, job = time.time() + timeout, {}
    while time.time() < deadline:
        job = _job(cluster, task)
        if job.get("JobState") == "PENDING" and job.get("Reason") == "BeginTime":
            _sh(cluster, "scontrol", "update", f"JobId={task}", "StartTime=now")
        elif job.get("JobState") in ENDED and int(job.get("Restarts", "0")) >= 1:
            return {k: job.get(k, "") for k in ("JobState", "Reason", "ExitCode", "Restarts", "RunTime")}
        time.sleep(0.5)
    raise AssertionError(f"task {task} did not run again and end in {timeout} s: {job}")


def test_a_slurm_task_requeued_on_another_host_finds_its_own_trial_stale(monkeypatch):
    """Across hosts a dead worker is found by heartbeat only, and a journal file keeps none; a requeued copy of a SLURM
    task knows its predecessor's trials: SLURM runs one copy of a task at a time."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    mine, other = study.ask(), study.ask()
    storage = study._storage
    for trial, task in ((mine, "41_0"), (other, "41_1")):
        storage.set_trial_system_attr(trial._trial_id, liveness.WORKER, "node7:1234:99")  # another host
        storage.set_trial_system_attr(trial._trial_id, liveness.SLURM_TASK, task)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert liveness.slurm_task() == "41_0"
    assert liveness.stale_trials(study) == {mine._trial_id: "stale: its SLURM task 41_0 was requeued while it ran"}
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert liveness.stale_trials(study) == {}  # outside SLURM: another host's worker is judged by heartbeat


def test_the_bench_gives_both_ways_the_same_configurations_of_the_grid():
    """make bench-slurm compares the ways on the same trials: each round's 12 configurations are distinct points of
    the study's grid, the same whenever the round is drawn again, other in another round."""
    grid = {
        "model.conv1_kernel": {3, 5},
        "model.conv2_kernel": {3, 5},
        "model.conv1_channels": {8, 12, 16},
        "model.conv2_channels": {8, 12, 16},
        "model.fc1_size": {50, 100},
        "data.batch_size": {64, 128, 256, 512},
        "optimizer.lr": {0.1, 0.01, 0.001},
        "optimizer.momentum": {0.9, 0.99},
        "model.weight_init": {"xavier_normal", "xavier_uniform", "normal"},
    }
    drawn = configurations(0)
    assert len(drawn) == N_TRIALS == len({tuple(sorted(c.items())) for c in drawn})
    assert all(c.keys() == grid.keys() and all(v in grid[k] for k, v in c.items()) for c in drawn)
    assert configurations(0) == drawn != configurations(1)
    runs = [
        {"round": k, "way": w, "cancelled": None, "wall_s": wall, "idle_share": 0.1}
        for k, (a, b) in enumerate([(60, 120), (70, 140)])
        for w, wall in (("array", a), ("launcher", b))
    ]
    runs.append({"round": 0, "way": "array", "cancelled": "5_0", "wall_s": 999, "idle_share": 0.9})  # not paired
    s = summary(runs)
    assert s["rounds"] == 2 and s["array_over_launcher_wall"]["ratio"] == pytest.approx(0.5)
    assert s["ways"]["launcher"]["wall_s"]["mean"] == pytest.approx(130)


def test_job_array_refuses_a_storage_other_hosts_cannot_share(tmp_path):
    proc = run_cli("fmnist.slurm_workers", "--workers", "2", f"hydra.sweep.dir={tmp_path / 's'}", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "cannot be shared by workers on several hosts" in proc.stderr and "journal:///FILE" in proc.stderr
    assert not (tmp_path / "s").exists()
    proc = run_cli(
        "fmnist.slurm_workers", "--workers", "0", f"hydra.sweeper.storage=journal:///{tmp_path}/j", check=False
    )
    assert proc.returncode == 1 and "--workers=0: give a whole number >= 1" in proc.stderr


@needs_launcher
@needs_slurm
def test_no_controller_is_one_line_and_writes_nothing(tmp_path):
    down = Cluster(tmp_path / "cluster")  # its slurm.conf, no daemon started: nothing listens on its ports
    (down.root / "etc").mkdir(parents=True)
    down._write_conf(free_port(), free_port(), free_port())
    proc = run_cli(*sweep_cmd(tmp_path / "s", "optimizer.lr=0.01,0.001", *SLURM), check=False, env=down.env)
    assert proc.returncode == 1 and proc.stderr.startswith("error: hydra/launcher=submitit_slurm: no SLURM controller")
    assert "Unable to contact slurm controller" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "s").exists()
    journal = f"hydra.sweeper.storage=journal:///{tmp_path}/j.log"
    gone = {"SLURM_CONF": str(tmp_path / "nowhere.conf")}
    proc = run_cli(
        "fmnist.slurm_workers", "--workers", "2", journal, f"hydra.sweep.dir={tmp_path}/w", check=False, env=gone
    )
    assert proc.returncode == 1 and f"SLURM_CONF={tmp_path / 'nowhere.conf'} is not a file" in proc.stderr
    assert not (tmp_path / "w").exists()


@needs_launcher
@pytest.mark.parametrize(
    "override, message",
    [
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0: give the number of trials in the study"),
        ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0: give the number of trials launched at once"),
        ("hydra.launcher.array_parallelism=0", "hydra.launcher.array_parallelism=0: give how many"),
    ],
)
def test_sweeper_keys_that_cannot_work_are_one_line(tmp_path, override, message):
    proc = run_cli(*sweep_cmd(tmp_path / "s", "optimizer.lr=0.01,0.001", *SLURM, override), check=False)
    assert proc.returncode == 1 and message in proc.stderr and not (tmp_path / "s").exists()


@needs_slurm
def test_a_partition_slurm_does_not_have_is_one_line(cluster, tmp_path):
    proc = run_cli(
        *sweep_cmd(tmp_path / "s", "optimizer.lr=0.01,0.001", *SLURM, "hydra.launcher.partition=gpu"),
        check=False,
        env=cluster.env,
    )
    assert proc.returncode == 1 and "SLURM has no partition 'gpu'; use one of debug" in proc.stderr
    assert not (tmp_path / "s").exists()
    journal = f"hydra.sweeper.storage=journal:///{tmp_path}/j.log"
    proc = run_cli(
        "fmnist.slurm_workers", "--workers", "2", "--partition", "gpu", journal, check=False, env=cluster.env
    )
    assert proc.returncode == 1 and "SLURM has no partition 'gpu'" in proc.stderr


@needs_slurm
@pytest.mark.slow  # SLURM jobs of real training, one cancelled mid-trial: a minute and more
def test_submitit_sweep_survives_a_cancelled_job(cluster, tmp_path, data_root):
    sweep = tmp_path / "s"
    cmd = sweep_cmd(sweep, *FOUR, *SLURM, "trainer.max_epochs=3", "hydra.sweeper.n_jobs=2")
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], env={**cluster.env, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE, text=True
    )
    cancelled = first_run_after_one_epoch(sweep)
    cluster.cancel_run(cancelled)
    assert proc.wait(timeout=600) == 0
    rows = read_rows(sweep / "summary.csv")
    assert sum(r["state"] == "COMPLETE" for r in rows) == 4  # n_trials reached: every configuration completed
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert (
        len(failed) == 1 and "ended CANCELLED" in failed[0]["reason"] and "runs again as trial" in failed[0]["reason"]
    )
    # the rerun continued the cancelled run from its last.pt, in its folder: epoch 1 was not trained twice
    assert _epochs(cancelled) == [1, 2, 3]
    assert not any(r["state"] == "RUNNING" for r in rows)


@needs_slurm
@pytest.mark.slow  # a job given SLURM's time-limit warning mid-trial: about a minute
def test_submitit_job_at_its_time_limit_runs_again_from_last_pt(cluster, tmp_path, data_root):
    sweep = tmp_path / "s"
    # SLURM may send the warning signal "up to 60 seconds earlier than specified" (sbatch --signal): under a one-minute
    # limit it came before Python had installed submitit's handler (CI: the job FAILED at 21 s, its three reruns were
    # signalled 15-30 s in and none finished). So the limit here is long enough that SLURM's own signal never comes,
    # and the test sends that same signal to the job's steps once the run has an epoch behind it. Under 10 minutes
    # submitit counts any USR2 as the time limit (its guaranteed walltime, min(0.8 T, T - 10 min), is 0).
    limit = ["hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=30", "trainer.max_epochs=8"]
    cmd = sweep_cmd(sweep, *FOUR, *SLURM, *limit, "hydra.sweeper.n_trials=1", "+hydra.sweep.mode=750")
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], env={**cluster.env, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE, text=True
    )
    cut = first_run_after_one_epoch(sweep)
    job = cluster.cancel_run(cut, signal="USR2")
    assert proc.wait(timeout=600) == 0
    # the job asked SLURM for that signal before its limit: the sbatch script submitit wrote for it
    script = next(sweep.rglob(f"{job}_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@30" in script and "#SBATCH --time=10" in script
    assert sweep.stat().st_mode & 0o777 == 0o750  # hydra.sweep.mode, as the plugin's own launch sets it
    rows = read_rows(sweep / "summary.csv")
    done = [r for r in rows if r["state"] == "COMPLETE"]
    timed_out = [r for r in rows if r["state"] == "FAIL"]
    assert len(done) == 1 and len(timed_out) == 1
    assert f"SLURM job {job} reached its time limit" in timed_out[0]["reason"]
    # the rerun continued the cut run from its last.pt, in its folder: no epoch trained twice
    assert Path(done[0]["run_dir"]) == cut.resolve() and _epochs(cut) == list(range(1, 9))


@needs_slurm
@pytest.mark.slow  # two workers as a job array, one task cancelled mid-trial, then a one-worker array requeued
def test_job_array_workers_survive_a_cancelled_and_a_requeued_task(cluster, tmp_path, data_root):
    url = f"journal:///{tmp_path}/journal.log"
    sweep = tmp_path / "s"
    args = ["--workers", "2", "--wait", f"hydra.sweeper.storage={url}"]
    cmd = ["fmnist.slurm_workers", *args, *sweep_cmd(sweep, *FOUR, "trainer.max_epochs=3")[2:]]
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], env={**cluster.env, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE, text=True
    )
    cancelled = first_run_after_one_epoch(sweep)
    cluster.cancel_run(cancelled, url)
    assert proc.wait(timeout=600) == 0 and "submitted job array" in proc.stdout.read()
    trials = _study(url).trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    assert "died while it ran" in _study(url).user_attrs[f"fmnist:stale:{cancelled.name}"]
    assert _epochs(cancelled) == [1, 2, 3]  # the other worker continued it from last.pt
    assert (sweep / "slurm" / "workers.sbatch").read_text().count("#SBATCH --requeue") == 1

    # one worker, requeued mid-trial (as preemption does): the same task starts again and continues its own trial
    url2, sweep2 = f"journal:///{tmp_path}/journal2.log", tmp_path / "s2"
    cmd = ["fmnist.slurm_workers", "--workers", "1", f"hydra.sweeper.storage={url2}"]
    out = run_cli(
        *cmd, *sweep_cmd(sweep2, *FOUR, "trainer.max_epochs=3", "hydra.sweeper.n_trials=2")[2:], env=cluster.env
    )
    job = out.stdout.split("submitted job array ")[1].split(":")[0]
    requeued = first_run_after_one_epoch(sweep2)
    _sh(cluster, "scontrol", "requeue", f"{job}_0")
    ended = _run_again_after_requeue(cluster, f"{job}_0")
    log = (sweep2 / "slurm" / f"worker-{job}_0.log").read_text()
    trials = _study(url2).trials
    why = f"task {job}_0 ended {ended}; its log ends:\n{log[-4000:]}"  # CI's only view of the cluster
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2, why
    assert "stale" in _study(url2).user_attrs[f"fmnist:stale:{requeued.name}"]
    assert _epochs(requeued) == [1, 2, 3], why  # its run continued from last.pt after the requeue
    assert "DUE TO JOB REQUEUE" in log
