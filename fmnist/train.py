"""Train one CNN: `python -m fmnist.train [overrides]`. `train(cfg)` is the pure function; `main` a thin wrapper."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from fmnist import checkpoint
from fmnist.data import load_splits
from fmnist.errors import UserError, one_line_errors
from fmnist.model import n_params

log = logging.getLogger(__name__)

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
COLUMNS = ("epoch", *METRICS, "train_seconds", "epoch_seconds")
CHANCE = 0.15  # training accuracy below this (10 classes: chance is 0.10) counts as not learning


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA GPU is visible: use trainer.device=auto or cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) over a whole split."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(x), correct.item() / len(x)


def train_epoch(model, optimizer, x, y, batch_size: int, generator: torch.Generator, progress=None):
    """One pass over shuffled index slices of the preloaded tensors: (mean loss, accuracy) seen while training."""
    model.train()
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    starts = range(0, len(x), batch_size)
    for i in progress(starts) if progress else starts:
        idx = perm[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # accumulate on the device: no host sync per batch
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def _progress(cfg, epoch: int):
    show = cfg.trainer.progress
    if show == "auto":
        show = sys.stderr.isatty()
    if not show:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=f"epoch {epoch}", unit="batch", leave=False)


def _write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def write_json(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def start_wandb(cfg: DictConfig, out_dir: Path, **overrides):
    """A W&B run writing under out_dir, or None with logger=none / mode=disabled; overrides go to wandb.init."""
    if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
        return None
    import wandb  # only when used: it is slow to import

    settings = dict(
        project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group, tags=list(cfg.logger.tags),
        mode=cfg.logger.mode, dir=str(out_dir), name=out_dir.name, config=OmegaConf.to_container(cfg, resolve=True),
    )  # fmt: skip
    return wandb.init(**{**settings, **overrides})


def build_model(model_cfg: DictConfig):
    """The model from its config; an impossible architecture is a one-line ValueError, before any data loads."""
    try:
        return instantiate(model_cfg)
    except InstantiationException as e:
        raise ValueError(str(e.__cause__ or e)) from e


def train(cfg: DictConfig) -> dict:
    """Train per cfg, writing metrics.csv, summary.json and checkpoints/{best,last}.pt; return the summary."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    started = time.perf_counter()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.trainer.seed)  # model init
    model = build_model(cfg.model)
    device = resolve_device(cfg.trainer.device)
    model.to(device)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    shuffle = torch.Generator().manual_seed(cfg.trainer.seed)  # batch order, saved for resume

    history: list[dict] = []
    best: dict | None = None
    wandb_id, wall_before = None, 0.0
    last_path = ckpt_dir / "last.pt"
    if cfg.trainer.resume and last_path.exists():
        ckpt = checkpoint.load(last_path)  # on the CPU: the RNG state must stay there
        if ckpt["arch"] != model.arch:
            raise UserError(
                f"{last_path} holds architecture {ckpt['arch']} but the config asks for {model.arch}: "
                "use another hydra.run.dir, or trainer.resume=false to start over there"
            )
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["rng"]["shuffle"])
        history, best, wandb_id, wall_before = (
            ckpt["history"],
            ckpt["best"],
            ckpt["wandb_id"],
            ckpt["wall_seconds"],
        )
        log.info("resuming from %s after epoch %d", last_path, ckpt["epoch"])

    data = load_splits(cfg.data, device)
    run = start_wandb(cfg, out_dir, id=wandb_id, resume="allow" if wandb_id else None)
    if run:
        run.define_metric("*", step_metric="epoch")
    status, reason = "completed", None
    try:
        for epoch in range(len(history) + 1, cfg.trainer.max_epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_acc = train_epoch(
                model,
                optimizer,
                data.train_x,
                data.train_y,
                cfg.data.batch_size,
                shuffle,
                _progress(cfg, epoch),
            )
            train_seconds = time.perf_counter() - t0
            patience = cfg.trainer.get("chance_patience")
            if not math.isfinite(train_loss):  # the weights are gone: stop instead of burning epochs
                reason = f"training loss became {train_loss} in epoch {epoch}"
            elif patience and epoch >= patience and train_acc < CHANCE:  # the study's lr=0.1 fails without NaN too
                reason = f"training accuracy {100 * train_acc:.2f}% after {epoch} epochs: not learning"
            if reason:
                status = "diverged"
                log.warning("diverged: %s; stopping (lower optimizer.lr)", reason)
                break
            val_loss, val_acc = evaluate(model, data.val_x, data.val_y, cfg.trainer.eval_batch_size)
            test_loss, test_acc = evaluate(model, data.test_x, data.test_y, cfg.trainer.eval_batch_size)
            row = dict(
                epoch=epoch, train_loss=train_loss, train_accuracy=train_acc, val_loss=val_loss,
                val_accuracy=val_acc, test_loss=test_loss, test_accuracy=test_acc, train_seconds=train_seconds,
            )  # fmt: skip
            row["epoch_seconds"] = time.perf_counter() - t0
            history.append(row)
            improved = best is None or val_acc > best["val_accuracy"]
            if improved:
                best = {k: row[k] for k in ("epoch", *METRICS)}
            state = _checkpoint(
                model, optimizer, shuffle, history, best, run, wall_before + time.perf_counter() - started
            )
            checkpoint.save(state, last_path)
            if improved:
                checkpoint.save(state, ckpt_dir / "best.pt")
            _write_csv(history, out_dir / "metrics.csv")
            log.info(
                "epoch %d/%d  train %.2f%% (loss %.4f)  val %.2f%%  test %.2f%%  %.1fs",
                epoch, cfg.trainer.max_epochs, 100 * train_acc, train_loss, 100 * val_acc, 100 * test_acc,
                row["epoch_seconds"],
            )  # fmt: skip
            if run:
                run.log(row)
        summary = {
            "status": status,
            "reason": reason,
            "best": best,
            "last": history[-1] if history else None,
            "epochs_run": len(history),
            "arch": model.arch,
            "params": n_params(model),
            "wall_seconds": wall_before + time.perf_counter() - started,
            "device": str(device),
            "best_checkpoint": str((ckpt_dir / "best.pt").resolve()) if best else None,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        write_json(summary, out_dir / "summary.json")
        if run and best:
            run.summary.update({f"best/{k}": v for k, v in best.items()})
            run.summary["status"] = status
        return summary
    finally:
        if run:  # always finished, so one failing job does not poison the next one of a multirun
            run.finish(exit_code=0 if status == "completed" else 1)


def _checkpoint(model, optimizer, shuffle, history, best, run, wall) -> dict:
    return {
        "arch": dict(model.arch),
        "state_dict": model.state_dict(),
        "epoch": history[-1]["epoch"],
        "metrics": dict(history[-1]),
        "history": list(history),
        "best": dict(best),
        "optimizer": optimizer.state_dict(),
        "rng": {"shuffle": shuffle.get_state()},
        "wandb_id": run.id if run else None,
        "wall_seconds": wall,
    }


def metric_value(summary: dict, name: str) -> float:
    """The value Optuna maximizes; NaN for a run that diverged or never finished an epoch."""
    if name not in METRICS:
        raise ValueError(f"optimized_metric={name!r} is not a training metric; use one of {', '.join(METRICS)}")
    if summary["status"] != "completed" or summary["best"] is None:
        return float("nan")
    return float(summary["best"][name])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> float:
    metric_value({"status": "", "best": None}, cfg.optimized_metric)  # a bad metric name fails before training
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and "group" in cfg.logger and cfg.logger.group is None:
        with open_dict(cfg):  # W&B groups the trials of one sweep
            cfg.logger.group = hc.sweeper.get("study_name") or Path(hc.sweep.dir).name
    return metric_value(train(cfg), cfg.optimized_metric)


if __name__ == "__main__":
    main()
