"""Helpers shared by the tests: the real config composed as the CLI would, shrunk for a 2-core CPU, on real data;
the real commands run as a user runs them."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# small but real: 5 000 training and 1 000 validation images from the training file, the full 10 000 test images
PRECISION_CACHE = Path(tempfile.mkdtemp(prefix="fmnist-test-precision-"))
SMALL = ["data.subset=6000", "data.val_size=1000", "trainer.device=cpu", "logger=none", "trainer.max_epochs=1"]


def compose_cfg(out_dir: Path, overrides: list[str] = (), config_name: str = "config"):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out_dir)
    cfg.hydra.runtime.cwd = str(REPO)
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} resolves as under @hydra.main
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        del cfg["hydra"]  # a job's config has no hydra node; ${hydra:...} reads HydraConfig
    return cfg


def small_cfg(out_dir: Path, *overrides: str, config_name: str = "config"):
    if config_name in ("prune", "bench", "latency"):  # never a latency table cached under the repo's outputs/
        overrides = (f"latency.dir={out_dir}/latency", *overrides)
    if config_name in ("config", "prune", "bench_train"):  # nor auto precision's step timings (one cache per session)
        overrides = (f"trainer.precision_cache={PRECISION_CACHE}", *overrides)
    return compose_cfg(out_dir, [*SMALL, *overrides], config_name)


def prune_small(out_dir: Path, checkpoint: Path, *overrides: str) -> dict:
    """fmnist.prune of `checkpoint` on 2 500 + 500 real images."""
    from fmnist.prune import prune

    return prune(
        small_cfg(
            out_dir,
            f"prune.checkpoint={checkpoint}",
            "data.subset=3000",
            "data.val_size=500",
            *overrides,
            config_name="prune",
        )
    )


def run_cli(*args: str, cwd: Path = REPO, check: bool = True, timeout: int = 600, env: dict | None = None):
    """Run `python -m ...` as a user would; returns the CompletedProcess."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


TINY = ["trainer.max_epochs=1", "data.subset=3000", "data.val_size=500", "logger=none", "trainer.device=cpu"]


def sweep_cmd(sweep_dir: Path, *extra: str) -> list[str]:
    """A real --multirun over a space given on the command line (the study's 9-key space dropped), grid sampler."""
    return [
        "fmnist.train",
        "--multirun",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.params=null",
        "hydra/sweeper/sampler=grid",
        *extra,
    ]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def worker(cmd: list[str], host: str | None = None) -> subprocess.Popen:
    """A sweep worker (`python -m` cmd) in the background; on `host`, another machine's name: its own UTS namespace
    where we may make one (root), else the FMNIST_HOST override the worker ids read."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    argv = [sys.executable, "-m", *cmd]
    if host and os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"', *argv]
    elif host:
        env["FMNIST_HOST"] = host
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
