"""Many training runs that differ in several keys at once, launched as one Hydra multirun of `fmnist.train`
(Hydra's joblib launcher, n_jobs at a time): what fmnist.retrain and fmnist.findings run their jobs with."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from omegaconf import OmegaConf

from fmnist.core import runs


def launch(
    jobs: list[tuple[str, list[str]]], out: Path, n_jobs: int, extra: list[str], name: str = "retrain"
) -> dict[str, str]:
    """Train every job (a run folder under `out` and its overrides) that has not finished, as one Hydra multirun of
    `fmnist.train` through Hydra's joblib launcher, n_jobs at a time, in the order given; each job's outcome.

    The jobs differ in several keys at once, which no sweep's product of values expresses: each becomes a config of
    its own, out/.jobs/<invocation>/<name>/jobN.yaml (its overrides and its run folder as hydra.sweep.subdir), and the
    multirun sweeps that one group. A finished run is not launched again (its summary.json says how it ended); a cut
    one resumes from its last.pt."""
    todo = [(sub, o) for sub, o in jobs if not runs.summary_of(out / sub, "train")]
    if todo:
        (out / ".jobs").mkdir(parents=True, exist_ok=True)
        # a folder of this invocation's own: Hydra reads each job's config only when that job starts, so a shared
        # one let a second command on the same out (a second findings or retrain) swap the first's jobs under it
        searchpath = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out / ".jobs"))
        try:
            _multirun(todo, searchpath, name, out, n_jobs, extra)
        finally:
            shutil.rmtree(searchpath, ignore_errors=True)
    outcomes, launched = {}, {sub for sub, _ in todo}
    for sub, _ in jobs:
        summary = runs.summary_of(out / sub, "train")
        status = f"{summary['status']}{'' if sub in launched else ' earlier'}" if summary else "failed"
        outcomes[sub] = status if summary else f"{status} (see {out / sub / 'train.log'})"
    return outcomes


def _multirun(todo: list[tuple[str, list[str]]], searchpath: Path, name: str, out: Path, n_jobs: int, extra: list[str]):
    """Each job as searchpath/<name>/jobN.yaml, then one `fmnist.train --multirun` over that group."""
    for i, (sub, job_overrides) in enumerate(todo):
        node = OmegaConf.from_dotlist(job_overrides)
        node.hydra = {"sweep": {"subdir": sub}}
        runs.write_text(f"# @package _global_\n{OmegaConf.to_yaml(node)}", searchpath / name / f"job{i}.yaml")
    cmd = [
        sys.executable,
        "-m",
        "fmnist.train",
        "--multirun",
        "~hparams_search",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"hydra.searchpath=['file://{searchpath.resolve()}']",
        f"hydra.sweep.dir={out}",
        f"+{name}=" + ",".join(f"job{i}" for i in range(len(todo))),
        *extra,
    ]
    # a failed job makes the multirun exit non-zero once every job ran: its run folder then has no summary
    run_group(cmd)


def run_group(cmd: list[str]) -> int:
    """Run cmd in a process group of its own and wait; if this command is stopped meanwhile (Ctrl-C, or kill's
    SIGTERM, here an exception), stop the whole group first. Otherwise the multirun's joblib workers train on after
    it: their runs are not recorded, and a rerun's runs take their folders over."""

    def stopped(signum, frame):
        raise SystemExit(128 + signum)  # so the group is stopped, and `launch` removes its job folder

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set a signal handler
    previous = signal.signal(signal.SIGTERM, stopped) if main_thread else None
    proc = subprocess.Popen(cmd, start_new_session=True)  # a group of its own: Ctrl-C reaches this process only
    try:
        return proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)  # the multirun and its workers: a cut run resumes from its last.pt
        proc.wait()
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
