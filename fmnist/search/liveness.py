"""Which running trials still have a live worker, on any machine, and what happens to those that do not.

The sweeper process that asked a trial records a heartbeat for it in the study's storage every heartbeat_interval
seconds, timed by the database's own clock (Optuna's RDBStorage heartbeat), so machines with skewed clocks agree.
Every worker, before it asks for a trial and while it waits for its jobs, fails the RUNNING trials that are stale:
- no heartbeat for grace_period seconds (any host; Optuna's record, which JournalStorage does not keep), or
- its worker was on this host and its process is gone (at once, without waiting for the grace period), or
- its worker was an earlier run of this very SLURM task (requeued: SLURM runs one copy of a task at a time), on any
  host and any storage, journal files included (at once).
A stale trial is FAILed (atomically: a trial its own worker finished meanwhile stays finished), its reason goes into
the study's user attrs, and Optuna's RetryHeartbeatStaleTrialCallback queues its configuration again as a WAITING
trial, which the next `ask()` of any worker picks up. Stale trials do not count toward n_trials.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from fmnist.core.machine import host
from fmnist.search import optuna_glue
from fmnist.search.trials import STALE, reruns

log = logging.getLogger(__name__)

WORKER = "fmnist:worker"  # trial system attr: host:pid:process start of the worker that asked it
STALE_RETRIES = 3  # a configuration whose trial went stale this often counts as a failed trial (it may kill its host)
SLURM_TASK = "fmnist:slurm_task"  # trial system attr: the SLURM array task (or job) its worker ran in


def retry_callback():
    return RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES)


def _proc_start(pid: int) -> str | None:
    """The process's start time (Linux): with the pid it names one process even after pid reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    return f"{host()}:{os.getpid()}:{_proc_start(os.getpid())}"


def slurm_task() -> str | None:
    """This process's SLURM task: JOBID_TASKID in a job array, the job id in a plain job, None outside SLURM. The same
    across a requeue (SLURM_RESTART_COUNT counts those)."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def dead_here(worker: str | None) -> bool:
    """True when the worker ran on this host and its process is gone; another host's worker is judged by heartbeat."""
    if worker is None:
        return False
    where, pid, start = worker.rsplit(":", 2)
    if where != host():
        return False
    return _proc_start(int(pid)) != start if start != "None" else not Path(f"/proc/{pid}").exists()


def stale_trials(study: optuna.Study) -> dict[int, str]:
    """RUNNING trials to fail: trial id -> why."""
    storage, found = optuna_glue.storage_of(study), {}
    running = {optuna_glue.trial_id(t): t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    me, task = worker_id(), slurm_task()
    for trial_id, t in running.items():
        worker = t.system_attrs.get(WORKER)
        if dead_here(worker):
            found[trial_id] = f"stale: its worker {worker} died while it ran"
        elif task and t.system_attrs.get(SLURM_TASK) == task and worker != me:
            found[trial_id] = f"stale: its SLURM task {task} was requeued while it ran"
    if optuna_glue.heartbeat_enabled(storage):
        for trial_id in optuna_glue.stale_trial_ids(study):
            if trial_id in running and trial_id not in found:
                worker = running[trial_id].system_attrs.get(WORKER, "unknown")
                found[trial_id] = f"stale: no heartbeat from its worker {worker} within the grace period"
    return found


def fail_as_stale(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """FAIL one stale trial and queue its configuration again; False when it had finished meanwhile."""
    storage = optuna_glue.storage_of(study)
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:  # its own worker (or another checker) finished it first: it stays as it is
        return False
    trial = storage.get_trial(trial_id)
    study.set_user_attr(f"{STALE}{trial.number}", reason)
    retry_callback()(study, trial)
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail every stale trial of the study (see the module's docstring); return their numbers."""
    failed = []
    for trial_id, reason in stale_trials(study).items():
        if fail_as_stale(study, trial_id, reason):
            failed.append(optuna_glue.storage_of(study).get_trial(trial_id).number)
            log.warning("trial %d %s: failed, its configuration queued again", failed[-1], reason)
    return failed


def stale_numbers(study: optuna.Study, trials=None) -> set[int]:
    """Trials failed as stale whose configuration was queued again: they do not count toward n_trials."""
    return set(reruns(study.get_trials(deepcopy=False) if trials is None else trials))


class Heartbeat:
    """A thread that keeps this worker's trials alive in the storage while the worker waits for its jobs, and calls
    on_beat(study) at every beat (the sweeper fails other workers' stale trials there and extends its own span).
    Storage errors are logged, not raised: the next beat tries again."""

    def __init__(self, study: optuna.Study, interval: float, on_beat=None) -> None:
        self.study, self.interval, self.on_beat = study, interval, on_beat or (lambda study: None)
        self.trials: set[int] = set()  # trial ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fmnist-heartbeat", daemon=True)

    def beat(self) -> None:
        storage = optuna_glue.storage_of(self.study)
        if optuna_glue.heartbeat_enabled(storage):
            for trial_id in list(self.trials):
                storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                self.on_beat(self.study)
            except Exception as e:  # noqa: BLE001 - e.g. the database restarting: the grace period covers a few misses
                log.warning("heartbeat: %s: %s", type(e).__name__, str(e).strip().splitlines()[0] if str(e) else "")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
