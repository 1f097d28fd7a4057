"""Trials as SLURM jobs: `python -m fmnist.train --multirun hydra/launcher=submitit_slurm ...` (hydra-submitit-launcher,
the `slurm` extra), checked before anything is written and launched so that SLURM ending a job ends only its trial.

The plugin (1.2.0) submits a batch of trials as one job array and returns `[job.results()[0] for job in jobs]`: the
first job SLURM ended early (cancelled, timed out, preempted, its node lost) raises `UncompletedJobError` out of the
whole batch while the other jobs still run, and the sweep would die with their trials RUNNING. `launch` submits the
same array the same way, waits for every job, and returns a failed JobReturn carrying `SlurmEnded` (SLURM's state,
from sacct) for each job that never returned; the sweeper then fails that trial with the reason and queues its
configuration again (fmnist/search/sweeper.py). A Python error inside a job is not SLURM's doing: Hydra's run_job
returns it as the job's failure, as on one machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from fmnist.core.errors import UserError

PINNED = {"hydra-submitit-launcher": "1.2.0", "submitit": "1.5.4"}  # `launch` repeats the plugin's submission


class SlurmEnded(RuntimeError):
    """SLURM ended the job before it returned: cancelled, timed out, preempted, node failure, out of memory."""


def is_slurm(launcher) -> bool:
    try:
        # the slurm extra, installed or not
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    except ImportError:  # the slurm extra is not installed: Hydra would not have found submitit_slurm either
        return False
    return isinstance(launcher, SlurmLauncher)


def partitions() -> list[str]:
    """The cluster's partitions (sinfo marks the default with *); UserError's text when no controller answers."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise UserError(
            "no SLURM client commands here (sinfo, sbatch): run on a login node (apt-get install slurm-client)"
        )
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sinfo would retry reading it for a minute
        raise UserError(f"SLURM_CONF={conf} is not a file: point it at the cluster's slurm.conf")
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise UserError(
            "no SLURM controller answers (sinfo: nothing in 60 s): start slurmctld, or check SLURM_CONF"
        ) from None
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[0]
        raise UserError(
            f"no SLURM controller answers ({first}): start slurmctld, or point SLURM_CONF at the cluster's slurm.conf"
        )
    return [p.strip().rstrip("*") for p in done.stdout.split() if p.strip()]


def check(where: str, partition: str | None) -> None:
    """One line before anything is written or submitted: no controller, or a partition the cluster does not have."""
    try:
        known = partitions()
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    if partition and partition not in known:
        raise UserError(
            f"{where}: SLURM has no partition {partition!r}; use one of {', '.join(known)} (or leave it unset for the "
            "default)"
        )


def launch(launcher, job_overrides, initial_job_idx: int) -> list[JobReturn]:
    """The plugin's `launch` (the executor and the job array built the same way), but every job's outcome comes back."""
    import submitit  # the slurm extra: only a SLURM sweep needs it
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf  # the slurm extra too

    params = dict(launcher.params)
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in launcher.config.hydra.sweep:  # as the plugin does: a shared cluster's sweeps may need group access
        sweep_dir.chmod(int(str(launcher.config.hydra.sweep.mode), 8))
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*job_params, strict=True))
    for job, overrides in zip(jobs, job_overrides, strict=True):
        print(f"SLURM job {job.job_id}: {' '.join(filter_overrides(overrides))}", flush=True)
    return [_outcome(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)]


def _outcome(job, overrides) -> JobReturn:
    from submitit.core.utils import FailedJobError, UncompletedJobError  # the slurm extra, as in launch()

    try:
        ret = job.results()[0]
        if ret.status == JobStatus.FAILED and isinstance(ret._return_value, UncompletedJobError):
            # submitit's handler of SLURM's warning signal before the time limit (hydra.launcher.signal_delay_s),
            # raised inside the run and returned by Hydra's run_job: the job reached its time limit
            ret.return_value = SlurmEnded(f"SLURM job {job.job_id} reached its time limit ({ret._return_value})")
        return ret
    except FailedJobError as e:  # Python failed in the job outside Hydra's run_job: the trial fails with it
        failed = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        failed.return_value = e
        return failed
    except UncompletedJobError:  # SLURM ended it: its state from sacct says how (CANCELLED by 0, TIMEOUT, ...)
        ended = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        ended.return_value = SlurmEnded(f"SLURM job {job.job_id} ended {job.state}")
        return ended
