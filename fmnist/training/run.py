"""One training run, start to end: `train(cfg)` builds the model and optimizer from config, resumes from last.pt,
runs the epochs, writes metrics.csv, checkpoints and summary.json, and logs to W&B. `python -m fmnist.train` and
`fmnist.bench_train` call it."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fmnist.core import checkpoint, runs
from fmnist.core.checks import check
from fmnist.core.data import load_splits
from fmnist.core.errors import UserError
from fmnist.core.machine import cpu_name, cpu_runtime, resolve_device
from fmnist.core.model import n_params
from fmnist.core.precision import resolve as resolve_precision
from fmnist.core.precision import scaler
from fmnist.core.runs import METRICS
from fmnist.training import loop

log = logging.getLogger(__name__)

# ended_at (Unix seconds) places each epoch on the clock: a command of many runs (fmnist.findings) spans sessions, and
# its wall time is the union of its runs' epochs
COLUMNS = ("epoch", *METRICS, "train_seconds", "epoch_seconds", "ended_at")
CHANCE = 0.15  # training accuracy below this (10 classes: chance is 0.10) counts as not learning


def train(cfg: DictConfig, should_stop: Callable[[int, dict], str | None] | None = None) -> dict:
    """Train per cfg, writing metrics.csv, summary.json and checkpoints/{best,last}.pt; return the summary.

    `should_stop(epoch, row)` is asked after every epoch; a reason it returns ends the run as `pruned` (a sweep's
    pruner uses it)."""
    check(cfg)
    device = resolve_device(cfg.trainer.device)  # before anything is written: an impossible device or precision
    started = time.perf_counter()
    cpu_runtime(cfg.trainer)  # threads and heap first: auto precision times a step under them
    torch.manual_seed(cfg.trainer.seed)  # model init
    model = loop.build_model(cfg.model)
    model.to(device)
    timing = functools.partial(
        loop.step_times, model, cfg.optimizer, cfg.data.batch_size, device, cfg.trainer.precision_cache
    )
    precision = resolve_precision(cfg.trainer.precision, device, timing=timing)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    claim = runs.claim(out_dir)  # before last.pt is read: a run still writing here stops at its next epoch
    ckpt_dir = out_dir / "checkpoints"
    optimizer = loop.build_optimizer(cfg.optimizer, model)
    shuffle = torch.Generator().manual_seed(cfg.trainer.seed)  # batch order, saved for resume

    history: list[dict] = []
    best: dict | None = None
    wandb_id, wall_before = None, 0.0
    last_path = ckpt_dir / "last.pt"
    resumed = None
    if cfg.trainer.resume and last_path.exists():
        resumed = ckpt = checkpoint.load(last_path)  # on the CPU: the RNG state must stay there
        if ckpt["arch"] != model.arch:
            raise UserError(
                f"{last_path} holds architecture {ckpt['arch']} but the config asks for {model.arch}: "
                "use another hydra.run.dir, or trainer.resume=false to start over there"
            )
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["rng"]["shuffle"])
        history, best, wandb_id, wall_before = ckpt["history"], ckpt["best"], ckpt["wandb_id"], ckpt["wall_seconds"]
        started_in = ckpt.get("precision", {}).get("used", "fp32")  # checkpoints from before trainer.precision: fp32
        if cfg.trainer.precision not in ("auto", started_in):
            raise UserError(
                f"{last_path} was trained in {started_in} but trainer.precision={cfg.trainer.precision}: "
                "a resumed run keeps its precision; use trainer.precision=auto, another hydra.run.dir, "
                "or trainer.resume=false"
            )
        if started_in != precision["used"]:
            precision = {**precision, "used": started_in, "why": f"resumed: the run started in {started_in}"}
        log.info("resuming from %s after epoch %d", last_path, ckpt["epoch"])
        threads = ckpt.get("threads")  # another count sums in another order: the rest of the run differs a little
        if threads and threads != torch.get_num_threads():
            log.warning(
                "%s was trained on %d threads, this process runs %d: the resumed run will not match an uninterrupted "
                "one exactly (set trainer.threads=%d for that)",
                last_path,
                threads,
                torch.get_num_threads(),
                threads,
            )

    grad_scaler = scaler(precision["used"], device)
    if grad_scaler and resumed and resumed.get("grad_scaler"):
        grad_scaler.load_state_dict(resumed["grad_scaler"])
    log.info("precision %(used)s (%(why)s)", precision)
    evaluate = functools.partial(
        loop.evaluate, model, batch_size=cfg.trainer.eval_batch_size, precision=precision["used"]
    )
    data = load_splits(cfg.data, device)
    run = runs.start_wandb(cfg, out_dir, id=wandb_id, resume="allow" if wandb_id else None)
    if run:
        run.define_metric("*", step_metric="epoch")
    status, reason = "completed", None
    try:
        for epoch in range(len(history) + 1, cfg.trainer.max_epochs + 1):
            t0 = time.perf_counter()
            bar = loop.progress_bar(cfg.trainer.progress, epoch)
            train_loss, train_acc = loop.train_epoch(
                model,
                optimizer,
                data.train_x,
                data.train_y,
                cfg.data.batch_size,
                shuffle,
                bar,
                precision["used"],
                grad_scaler,
            )
            train_seconds = time.perf_counter() - t0
            patience = cfg.trainer.chance_patience
            if not math.isfinite(train_loss):  # the weights are gone: stop instead of burning epochs
                reason = f"training loss became {train_loss} in epoch {epoch}"
            elif patience and epoch >= patience and train_acc < CHANCE:  # the study's lr=0.1 fails without NaN too
                reason = f"training accuracy {100 * train_acc:.2f}% after {epoch} epochs: not learning"
            if reason:
                status = "diverged"
                log.warning("diverged: %s; stopping (lower optimizer.lr)", reason)
                break
            val_loss, val_acc = evaluate(data.val_x, data.val_y)
            test_loss, test_acc = evaluate(data.test_x, data.test_y)
            row = dict(
                epoch=epoch,
                train_loss=train_loss,
                train_accuracy=train_acc,
                val_loss=val_loss,
                val_accuracy=val_acc,
                test_loss=test_loss,
                test_accuracy=test_acc,
                train_seconds=train_seconds,
            )
            row["epoch_seconds"] = time.perf_counter() - t0
            row["ended_at"] = time.time()
            history.append(row)
            improved = best is None or val_acc > best["val_accuracy"]
            if improved:
                best = {k: row[k] for k in ("epoch", *METRICS)}
            state = _checkpoint(
                model,
                optimizer,
                shuffle,
                history,
                best,
                run,
                wall_before + time.perf_counter() - started,
                precision,
                grad_scaler,
            )
            runs.check_claim(out_dir, claim)
            checkpoint.save(state, last_path)
            if improved:
                checkpoint.save(state, ckpt_dir / "best.pt")
            runs.write_csv(history, COLUMNS, out_dir / "metrics.csv")
            log.info(
                "epoch %d/%d  train %.2f%% (loss %.4f)  val %.2f%%  test %.2f%%  %.1fs",
                epoch,
                cfg.trainer.max_epochs,
                100 * train_acc,
                train_loss,
                100 * val_acc,
                100 * test_acc,
                row["epoch_seconds"],
            )
            if run:
                run.log({k: v for k, v in row.items() if k != "ended_at"})  # W&B keeps its own timestamps
            # after the last epoch there is nothing left to save: the trial completes with its value
            if should_stop and epoch < cfg.trainer.max_epochs and (reason := should_stop(epoch, row)):
                status = "pruned"
                log.info("pruned after epoch %d: %s", epoch, reason)
                break
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
            "cpu": cpu_name(),  # the machine that ran its last epochs (a resumed run may have started elsewhere)
            "precision": precision,  # requested, used and why (trainer.precision=auto decides per machine)
            "best_checkpoint": str((ckpt_dir / "best.pt").resolve()) if best else None,
            "multirun": HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        runs.check_claim(out_dir, claim)
        runs.write_summary("train", summary, out_dir)
        if run:
            if best:
                run.summary.update({f"best/{k}": v for k, v in best.items()})
            run.summary["status"] = status
            run.summary["precision"] = precision["used"]
            if status != "completed":  # a dashboard filter: pruned and diverged runs are tagged
                run.tags = (*run.tags, status)
        return summary
    finally:
        if run:  # always finished, so one failing job does not poison the next one of a multirun
            run.finish(exit_code=0 if status in ("completed", "pruned") else 1)


def _checkpoint(model, optimizer, shuffle, history, best, run, wall, precision, grad_scaler) -> dict:
    return {
        "precision": dict(precision),  # the weights stay fp32 in every precision
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
        "threads": torch.get_num_threads(),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler else None,
    }
