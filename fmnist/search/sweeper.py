"""The Optuna sweep loop behind `python -m fmnist.train --multirun`.

hydra-optuna-sweeper 1.4 parses the search space and builds the sampler; this loop replaces its `sweep()` so that a
study survives real use:
- `n_trials` is the study's total, so rerunning the command (or starting a second worker on the same storage) runs
  only what is missing, instead of the plugin's n_trials *more*;
- trials left RUNNING by a dead worker on this host are failed as stale and not counted (the grid sampler, which
  treats RUNNING points as taken, gets their grid point back);
- a diverged trial is PRUNED and a crashing one FAILED, each with its reason, and the sweep goes on; it fails as a
  whole only when no trial completed;
- trial N runs in `<sweep dir>/N`, and the results table and best.json are written at the end; a stale trial's
  rerun continues in its predecessor's folder from last.pt (a killed worker or a requeued SLURM task loses at most
  one epoch);
- on SLURM (`hydra/launcher=submitit_slurm`), a job SLURM ended (cancelled, timed out, preempted) fails its trial with
  SLURM's reason and queues its configuration again (fmnist/search/slurm.py).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import math
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from hydra.core.utils import JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf
from optuna.trial import TrialState

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.search import liveness, optuna_glue, slurm
from fmnist.search.storage import LOST, StorageLost, open_storage, storage_error, where
from fmnist.search.trials import DUPLICATE, SPANS, configuration, stale_reasons, summarize

log = logging.getLogger(__name__)

FOLDER = "fmnist:folder"  # trial system attr: its run folder under the sweep dir (its number, or a predecessor's)
TWIN_POLL, TWIN_STALL = 10.0, 900.0  # seconds: how often a repeated proposal checks its running twin; when to give up


MAX_REPEATS = 50  # proposals in a row that repeat a finished trial before the sweep calls its space exhausted


def taken(study: optuna.Study) -> int:
    """Trials that count toward n_trials: finished ones and those live workers are running; not stale ones (their
    configuration is queued again), nor repeated proposals that were answered without training."""
    trials = study.get_trials(deepcopy=False)
    stale = liveness.stale_numbers(study, trials)
    return sum(
        1 for t in trials if t.state != TrialState.WAITING and t.number not in stale and DUPLICATE not in t.system_attrs
    )


def _what_it_trains(trial) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in configuration(trial).items()))


def earlier_run(study: optuna.Study, trial) -> optuna.trial.FrozenTrial | None:
    """A finished, trained trial with exactly this trial's configuration: the same seed would train the same curve
    (seeded TPE on the study's all-categorical grid re-proposes points: 8 of 40 in the first study-scale sweep)."""
    key = _what_it_trains(trial)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if DUPLICATE not in t.system_attrs and t.number != trial.number and _what_it_trains(t) == key:
            return t
    return None


def running_twin(study: optuna.Study, trial, others: set[int]) -> optuna.trial.FrozenTrial | None:
    """A trial another worker is training right now with exactly this trial's configuration. TPE's constant liar
    steers proposals away from running trials, but its first n_startup_trials proposals are random draws, which can
    coincide on the study's all-categorical grid (2 of 40 in a study-scale sweep on Optuna 2.10, before the liar)."""
    key = _what_it_trains(trial)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number not in others and DUPLICATE not in t.system_attrs and _what_it_trains(t) == key:
            return t
    return None


def last_activity(folder: Path, since: float) -> float:
    """When a trial's job last wrote anything (metrics.csv is rewritten every epoch); `since` if nothing yet."""
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return max([since, *times])


@contextmanager
def _storage_lock(storage: str | None):
    """Serialize study creation on one sqlite file: two workers started at once would both create its tables."""
    if not storage or not str(storage).startswith("sqlite:///"):
        yield
        return
    db = Path(str(storage)[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _tell(study: optuna.Study, trial: optuna.Trial, value=None, state=TrialState.COMPLETE) -> None:
    try:
        study.tell(trial, value, state)
    except RuntimeError as e:  # the grid sampler calls study.stop() after its last point; tell has stored the state
        if "Study.stop" not in str(e):
            raise


def pruning(pruner) -> bool:
    return pruner is not None and not isinstance(pruner, optuna.pruners.NopPruner)


def check_pruner(pruner_cfg, max_epochs: int) -> None:
    """The pruner's resources are epochs: none may lie beyond trainer.max_epochs."""
    for key in ("min_resource", "max_resource"):
        value = (pruner_cfg or {}).get(key)
        if isinstance(value, int) and value > max_epochs:
            raise UserError(
                f"hydra.sweeper.pruner.{key}={value} is above trainer.max_epochs={max_epochs}: lower it "
                f"or raise trainer.max_epochs (a trial cannot train past its last epoch)"
            )


class ResumableSweeperImpl(OptunaSweeperImpl):
    def __init__(self, pruner, heartbeat_interval: int | None, grace_period: int | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pruner = pruner
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        except LOST as e:  # the database went away mid-sweep: what to do, in one line
            error = storage_error(e, str(self.storage))
            print(f"error: {error if isinstance(error, UserError) else e}", file=sys.stderr)
            sys.exit(1)
        except UserError as e:  # one line, as a single run reports it; nothing has been written
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    def _check_keys(self) -> None:
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or value < 1:
                what = "trials in the study" if key == "n_trials" else "trials launched at once"
                raise UserError(f"hydra.sweeper.{key}={value}: give the number of {what}, a whole number >= 1")
        if slurm.is_slurm(self.launcher) and (slots := self.launcher.params.get("array_parallelism")) is not None:
            if not isinstance(slots, int) or slots < 1:
                raise UserError(
                    f"hydra.launcher.array_parallelism={slots}: give how many of a batch's jobs may run at once (>= 1)"
                )
        interval, grace = self.heartbeat_interval, self.grace_period
        for key, value in (("heartbeat_interval", interval), ("grace_period", grace)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                null = "no heartbeats" if key == "heartbeat_interval" else "twice the interval"
                raise UserError(f"hydra.sweeper.{key}={value} must be a positive number of seconds (or null: {null})")
        if interval and grace and grace <= interval:
            raise UserError(
                f"hydra.sweeper.grace_period={grace} must exceed heartbeat_interval={interval}: a live "
                f"worker would be declared dead between two heartbeats"
            )

    def _sweep(self, arguments: list[str]) -> None:
        # Optuna records heartbeats only inside study.optimize (optuna#3256) and warns at every ask(); this loop
        # records them itself (fmnist/search/liveness.py)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        started = time.time()  # wall clock: spans of several workers (processes, machines) are merged by time
        if self.storage and str(self.storage).startswith("sqlite:///"):  # absolute, whatever the cwd of later runs
            self.storage = f"sqlite:///{Path(str(self.storage)[len('sqlite:///') :]).resolve()}"
        self._check_keys()
        if slurm.is_slurm(self.launcher):  # before the study exists: nothing is written for a cluster that is not there
            slurm.check("hydra/launcher=submitit_slurm", self.launcher.params.get("partition"))
        if pruning(self.pruner):
            check_pruner(self.config.hydra.sweeper.get("pruner"), self.config.trainer.max_epochs)
            if not self.storage:
                raise UserError(
                    "a pruner needs a storage its trials can reach: keep hydra.sweeper.storage set "
                    "(the default sqlite file) or use hydra/sweeper/pruner=none"
                )
        distributions, fixed, fixed_overrides = optuna_glue.search_space(self, arguments)
        n_total = self.n_trials
        if getattr(self.sampler, "func", None) is optuna.samplers.GridSampler:
            choices = {name: optuna_glue.grid_choices(self, d) for name, d in distributions.items()}
            self.sampler = self.sampler(choices)
            n_total = min(n_total, math.prod(len(c) for c in choices.values()))

        with _storage_lock(self.storage):  # makes the sqlite file's folder too
            storage = None
            if self.storage:
                storage = open_storage(str(self.storage), self.heartbeat_interval, self.grace_period)
            try:
                existed = storage is not None and any(
                    s.study_name == self.study_name for s in optuna.study.get_all_study_summaries(storage)
                )
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=storage,
                    sampler=self.sampler,
                    pruner=self.pruner,
                    load_if_exists=True,
                    direction=self.direction if isinstance(self.direction, str) else self.direction.name,
                )
            except Exception as e:
                raise storage_error(e, str(self.storage)) from None
        study.set_user_attr("fmnist:pruner", type(self.pruner).__name__ if pruning(self.pruner) else "none")
        self._fail_stale(study)
        done = taken(study)
        if existed and not isinstance(self.sampler, optuna.samplers.GridSampler):
            # a seeded sampler would replay the proposals of the study's first trials: a resumed run or a second
            # worker (even one started in the same second: the storage lock says who created the study) would train
            # the same configurations again
            self.sampler.reseed_rng()
        log.info(
            "study %s: %d of %d trials already taken, sampler %s, pruner %s, storage %s",
            study.study_name,
            done,
            n_total,
            type(self.sampler).__name__,
            type(self.pruner).__name__,
            where(str(self.storage)) if self.storage else "in memory",
        )
        me, repeats, waiting_for = liveness.worker_id(), 0, None
        key = f"{SPANS}{me}"
        spans = study.user_attrs.get(key, [])  # when this worker ran, kept across resumes

        def tick(study: optuna.Study) -> None:
            # the span is written from the start and extended at every beat, not only at the end: a worker that
            # writes the summary while another is still finishing (or was killed) still counts the other one
            study.set_user_attr(key, [*spans, [started, time.time()]])
            self._fail_stale(study)

        tick(study)
        heartbeat = liveness.Heartbeat(study, self.heartbeat_interval or 30, on_beat=tick)
        try:
            with heartbeat:
                while True:
                    self._fail_stale(study)
                    batch = min(self.n_jobs, n_total - taken(study))
                    if batch <= 0:
                        # the study is full, but another worker's trial may still die: wait for its outcome, so the
                        # study ends with n_trials finished and none RUNNING whoever is left standing
                        others = [
                            t.number
                            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                            if liveness.WORKER in t.system_attrs
                        ]
                        if not others:
                            break
                        if waiting_for != others:
                            log.info(
                                "waiting for trials %s of other workers (a dead worker's trial runs again here)", others
                            )
                            waiting_for = others
                        time.sleep(min(self.heartbeat_interval or 10, 10))
                        continue
                    trials = [study.ask() for _ in range(batch)]
                    for trial in trials:
                        optuna_glue.storage_of(study).set_trial_system_attr(
                            optuna_glue.trial_id(trial), liveness.WORKER, me
                        )
                        if task := liveness.slurm_task():  # a requeued copy of this task knows its trials
                            optuna_glue.storage_of(study).set_trial_system_attr(
                                optuna_glue.trial_id(trial), liveness.SLURM_TASK, task
                            )
                        heartbeat.trials.add(optuna_glue.trial_id(trial))
                    heartbeat.beat()  # from the first moment: a trial without a heartbeat is never found stale
                    overrides = optuna_glue.trial_overrides(self, trials, distributions, fixed, fixed_overrides)
                    for trial in trials:
                        self._await_twin(study, trial, {t.number for t in trials})
                    fresh = [(t, o) for t, o in zip(trials, overrides, strict=True) if not self._repeat(study, t)]
                    repeats = 0 if fresh else repeats + len(trials)
                    if repeats >= MAX_REPEATS:
                        log.warning(
                            "the sampler proposed %d finished configurations in a row: the search space "
                            "looks exhausted; stopping with %d trials",
                            repeats,
                            taken(study),
                        )
                        break
                    if fresh:
                        runs_, overrides = [t for t, _ in fresh], [o for _, o in fresh]
                        if pruning(self.pruner):  # the job finds its trial through this storage (job.num = number)
                            overrides = [(*o, f"hydra.sweeper.storage='{self.storage}'") for o in overrides]
                        for trial, ret in zip(runs_, self._launch(study, runs_, overrides), strict=True):
                            self._record(study, trial, ret)
                    heartbeat.trials.clear()
        finally:  # the sweep's wall time is the union of all workers' spans
            study.set_user_attr(key, [*spans, [started, time.time()]])

        sweep_dir = Path(self.config.hydra.sweep.dir)
        trials = study.get_trials(deepcopy=False)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        if not completed:
            reasons = sorted({t.user_attrs.get("reason", t.state.name) for t in trials})
            raise RuntimeError(f"every trial of study {study.study_name} failed or diverged: {'; '.join(reasons)}")
        best = study.best_trial
        OmegaConf.save(
            OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value}),
            sweep_dir / "optimization_results.yaml",
        )
        result = summarize(sweep_dir, study)
        log.info("best trial %d: val %.2f%%, written to %s", best.number, 100 * best.value, result["best_json"])

    def _fail_stale(self, study: optuna.Study) -> list[int]:
        with _storage_lock(self.storage):  # one checker at a time on an sqlite file (PostgreSQL locks the row)
            return liveness.fail_stale_trials(study)

    def _await_twin(self, study: optuna.Study, trial, batch: set[int]) -> None:
        """Wait while another worker trains this very configuration, so `_repeat` can answer with its outcome instead
        of training the same curve twice; give up on a twin whose job has written nothing for TWIN_STALL seconds
        (its worker is gone) and train it here."""
        sweep_dir, waited_for = Path(self.config.hydra.sweep.dir), None
        while (twin := running_twin(study, trial, batch)) is not None:
            folder = sweep_dir / twin.system_attrs.get(FOLDER, str(twin.number))
            idle = time.time() - last_activity(folder, twin.datetime_start.timestamp())
            if idle > TWIN_STALL:
                log.warning(
                    "trial %d repeats running trial %d, whose job wrote nothing for %.0f s: training it here",
                    trial.number,
                    twin.number,
                    idle,
                )
                return
            if waited_for != twin.number:
                log.info(
                    "trial %d repeats trial %d, running in another worker: waiting for its outcome",
                    trial.number,
                    twin.number,
                )
                waited_for = twin.number
            time.sleep(TWIN_POLL)

    def _repeat(self, study: optuna.Study, trial) -> bool:
        """Answer a proposal that repeats a finished trial with that trial's outcome, without training it again; it
        does not count toward n_trials, so the sweep still trains n_trials distinct configurations."""
        earlier = earlier_run(study, trial)
        if earlier is None:
            return False
        optuna_glue.storage_of(study).set_trial_system_attr(optuna_glue.trial_id(trial), DUPLICATE, earlier.number)
        trial.set_user_attr("reason", f"repeats trial {earlier.number}: not trained again")
        if earlier.state == TrialState.COMPLETE:
            _tell(study, trial, earlier.value)
        else:
            _tell(study, trial, state=TrialState.PRUNED)
        log.info("trial %d repeats trial %d's configuration: answered with its outcome", trial.number, earlier.number)
        return True

    def _folder(self, study: optuna.Study, trial) -> str:
        """A trial's run folder under the sweep dir: its number, or, for the rerun of a stale trial whose folder holds
        a last.pt, that folder, where training resumes (trainer.resume) instead of starting over."""
        storage, folder = optuna_glue.storage_of(study), str(trial.number)
        history = storage.get_trial(optuna_glue.trial_id(trial)).system_attrs.get("retry_history", [])
        if history:
            before = study.get_trials(deepcopy=False)[history[-1]]  # trial numbers index the study's trials
            theirs = before.system_attrs.get(FOLDER, str(before.number))
            if (Path(self.config.hydra.sweep.dir) / theirs / "checkpoints" / "last.pt").exists():
                folder = theirs
        storage.set_trial_system_attr(optuna_glue.trial_id(trial), FOLDER, folder)
        return folder

    def _launch(self, study: optuna.Study, trials, overrides):
        """Trial N runs as job N (the pruner finds its trial by hydra.job.num) in its folder (`_folder`)."""
        folders = [self._folder(study, t) for t in trials]
        overrides = [
            o if f == str(t.number) else [*o, f"hydra.sweep.subdir={f}"]
            for t, o, f in zip(trials, overrides, folders, strict=True)
        ]
        numbers = [t.number for t in trials]
        launch = (
            functools.partial(slurm.launch, self.launcher) if slurm.is_slurm(self.launcher) else self.launcher.launch
        )
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return launch(overrides, numbers[0])
        return [r for t, o in zip(trials, overrides, strict=True) for r in launch([o], t.number)]

    def _record(self, study: optuna.Study, trial: optuna.Trial, ret) -> None:
        """Tell Optuna how the job ended: COMPLETE with its value; PRUNED (its last reported value) when the pruner
        stopped it or it diverged, with `outcome` saying which; FAIL with the error. A trial another worker failed as
        stale while it ran here (no heartbeat reached the database in time) keeps that verdict: its rerun is queued."""
        if optuna_glue.storage_of(study).get_trial(optuna_glue.trial_id(trial)).state.is_finished():
            log.warning(
                "trial %d was failed as stale by another worker while it ran here (%s): its configuration "
                "runs again; this run's folder is kept",
                trial.number,
                stale_reasons(study).get(trial.number, "no reason recorded"),
            )
            return
        error = optuna_glue.job_exception(ret) if ret.status != JobStatus.COMPLETED else None
        if isinstance(error, (StorageLost, slurm.SlurmEnded)):  # not the configuration's fault: it runs again
            first = str(error).strip().splitlines()[0]
            liveness.fail_as_stale(study, optuna_glue.trial_id(trial), f"stale: {first}")
            log.warning("trial %d: %s; its configuration runs again", trial.number, first)
            return
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir).resolve()  # working_dir is the cwd (chdir=false)
        trial.set_user_attr("run_dir", str(run_dir))
        summary = runs.summary_of(run_dir, "train")
        if ret.status == JobStatus.COMPLETED and summary:
            trial.set_user_attr("epochs", summary["epochs_run"])
            if pruning(self.pruner):
                # the job reported these through its own connection; this process's Optuna caches its RUNNING
                # trials and would not see them: report them again here, so the PRUNED trial keeps its last value
                # and the sampler sees every curve
                for row in runs.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").exists() else []:
                    trial.report(float(row[self.config.optimized_metric]), int(row["epoch"]))
            if summary["status"] == "completed":
                _tell(study, trial, float(ret.return_value))
                return
            trial.set_user_attr("outcome", summary["status"])  # pruned | diverged
            trial.set_user_attr("reason", f"{summary['status']}: {summary['reason']}")
            _tell(study, trial, state=TrialState.PRUNED)
            log.info("trial %d %s", trial.number, trial.user_attrs["reason"])
            return
        first = str(error).strip().splitlines()[0] if error and str(error).strip() else ""
        reason = f"{type(error).__name__}: {first}" if error else "the job wrote no summary.json"
        trial.set_user_attr("outcome", "failed")
        trial.set_user_attr("reason", reason)
        _tell(study, trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason)


def pruning_callback(hc, metric: str):
    """In a trial's job: a `should_stop(epoch, row)` that reports `metric` to the job's own Optuna trial and returns
    the pruner's reason to stop, or None when the sweep has no pruner. The job learns everything from the sweeper's
    config that Hydra hands it: the pruner, storage and study name, and its trial number (= hydra.job.num)."""
    pruner_cfg = hc.sweeper.get("pruner")
    if not pruner_cfg or pruner_cfg.get("_target_") == "optuna.pruners.NopPruner":
        return None
    pruner, storage, name = instantiate(pruner_cfg), hc.sweeper.storage, hc.sweeper.study_name
    try:  # the job never samples: a RandomSampler spares building TPE's model for nothing
        study = optuna.load_study(
            study_name=name, storage=open_storage(storage), pruner=pruner, sampler=optuna.samplers.RandomSampler()
        )
        trial = optuna_glue.trial_of(study, hc.job.num)
    except Exception as e:  # noqa: BLE001 - whatever the storage says, the trial fails with it and the sweep goes on
        raise UserError(
            f"trial {hc.job.num} cannot reach its study {name!r} in {storage}: {type(e).__name__}: {e}"
        ) from e

    def should_stop(epoch: int, row: dict) -> str | None:
        try:
            trial.report(row[metric], epoch)
            prune = trial.should_prune()
        except LOST as e:
            first = str(storage_error(e, storage)).strip().splitlines()[0]
            raise StorageLost(f"trial {hc.job.num} lost its storage after epoch {epoch}: {first}") from e
        if prune:
            return f"{type(pruner).__name__} stopped it after epoch {epoch} ({metric} {row[metric]:.4f})"
        return None

    return should_stop
