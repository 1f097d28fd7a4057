"""The run-folder contract: what every stage writes, how it is written, and how stages find each other.

Each stage's folder holds a `summary.json` whose `kind` says what made it:

    train  a training run (`python -m fmnist.train`, and every trial of a sweep): metrics.csv, checkpoints/
    sweep  a sweep folder (`python -m fmnist.train --multirun`): summary.csv/md, best.json, optuna.db, trial folders
    prune  a prune run (`python -m fmnist.prune`): trajectory.csv, pruned.pt
    bench  an inference benchmark (`python -m fmnist.bench`)

and stages find their inputs through it (`newest`, `resolve_checkpoint`), never by guessing a file's shape.

Files are written atomically (temp file in the same folder, then rename): a kill never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from fmnist.core import machine
from fmnist.core.errors import UserError

# the columns of every training run's metrics.csv (per epoch) and of its best epoch in summary.json
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
SUMMARY = "summary.json"
MAKER = {
    "train": "python -m fmnist.train",
    "sweep": "python -m fmnist.train --multirun",
    "prune": "python -m fmnist.prune",
    "bench": "python -m fmnist.bench",
}
KINDS = tuple(MAKER)


@contextmanager
def atomic(path: str | Path, mode: str = "w"):
    """An open temp file in path's folder that replaces path when the block ends, and vanishes if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


WRITER = ".writer"  # a training run folder's one writer: the token of the process that claimed it last


class FolderTaken(UserError):
    """Another process claimed this run folder after this one: this one stops without writing."""


def claim(folder: str | Path) -> str:
    """Make this process the one writer of a run folder; the latest claim wins. A sweep reruns a trial it found dead
    in that trial's folder, from its last.pt; if the "dead" run is alive after all (its worker cut off from the
    database, or paused), both would write the folder's checkpoints and metrics.csv in turn. With a claim, the earlier
    run finds the token changed at its next write (`check_claim`) and stops there."""
    token = f"{machine.host()}:{os.getpid()}:{uuid.uuid4().hex}"
    write_text(token, Path(folder) / WRITER)
    return token


def check_claim(folder: str | Path, token: str) -> None:
    """Raise FolderTaken unless this process's claim on `folder` still stands."""
    path = Path(folder) / WRITER
    holder = path.read_text() if path.exists() else None
    if holder != token:
        raise FolderTaken(
            f"{folder} was taken over by {holder or 'a process that removed its claim'} (a rerun of this trial, or a "
            "second run in the same hydra.run.dir): this run stops without writing; the other one continues there"
        )


def write_text(text: str, path: str | Path) -> Path:
    with atomic(path) as f:
        f.write(text)
    return Path(path)


def write_json(obj: dict, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2) + "\n", path)


def write_csv(rows: Iterable[dict], columns: Iterable[str], path: str | Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(buf.getvalue(), path)


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_summary(kind: str, summary: dict, folder: str | Path) -> Path:
    """`folder/summary.json` with its kind first."""
    assert kind in KINDS, kind
    return write_json({"kind": kind, **summary}, Path(folder) / SUMMARY)


def summary_of(folder: str | Path, kind: str) -> dict | None:
    """The folder's summary.json if it is one of `kind`; None when it has none, another kind or an unreadable one."""
    try:
        summary = json.loads((Path(folder) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("kind") == kind else None


def read_summary(folder: str | Path, kind: str) -> dict:
    """The summary.json of a folder written by the stage `kind`; one clear UserError otherwise."""
    folder = Path(folder)
    if folder.name == SUMMARY:
        folder = folder.parent
    path = folder / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no {SUMMARY}: give a folder written by `{MAKER[kind]}`") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}): rerun `{MAKER[kind]}` there or give another folder") from e
    found = summary.get("kind") if isinstance(summary, dict) else None
    if found != kind:
        what = f"a {found} folder" if found in KINDS else "not written by this version of fmnist"
        raise UserError(f"{folder} is {what}, not a {kind} folder: give a folder written by `{MAKER[kind]}`")
    return summary


def find(root: str | Path, kind: str) -> list[Path]:
    """Folders below root (root included) whose summary.json is of `kind`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [p.parent for p in root.glob(f"**/{SUMMARY}") if summary_of(p.parent, kind) is not None]
    return sorted(folders, key=lambda p: ((p / SUMMARY).stat().st_mtime, str(p)))


def newest(root: str | Path, kind: str) -> Path:
    """The most recently written folder of `kind` below root; a UserError naming the command that makes one."""
    found = find(root, kind)
    if not found:
        raise UserError(f"no {kind} folder under {root}: run `{MAKER[kind]}` first, or name one on the command line")
    return found[-1]


def resolve_checkpoint(spec: str | None, sweeps_dir: Path) -> Path:
    """A .pt from a .pt, a run folder, a sweep folder or a best.json; by default the newest sweep's best."""
    path = Path(spec) if spec else newest(sweeps_dir, "sweep")
    if path.is_dir():
        path = path / "best.json" if (path / "best.json").exists() else path / "checkpoints" / "best.pt"
    if path.suffix == ".json":
        try:
            ckpt = Path(json.loads(path.read_text())["checkpoint"])
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path} is not a sweep's best.json ({e}): give prune.checkpoint=PATH") from e
        if not ckpt.exists():
            raise UserError(f"{path} points to {ckpt}, which is gone: rerun the sweep or give prune.checkpoint=PATH")
        return ckpt
    return path


def pct(x) -> str:
    """An accuracy (a fraction, as files hold it) as the tables show it: percent with two decimals, '-' if none."""
    return f"{100 * float(x):.2f}" if x not in (None, "") else "-"


def start_wandb(cfg, out_dir: Path, **overrides):
    """A W&B run writing under out_dir, or None with logger=none / mode=disabled; overrides go to wandb.init."""
    if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
        return None
    import wandb  # only when used: it is slow to import

    settings = dict(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        tags=list(cfg.logger.tags),
        mode=cfg.logger.mode,
        dir=str(out_dir),
        name=out_dir.name,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    return wandb.init(**{**settings, **overrides})
