"""Training speed: `python -m fmnist.bench_train [overrides]` times fmnist's training epochs (progress bar, W&B,
checkpoints and all) beside a plain PyTorch loop over the same preloaded tensors, in one process."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict

from fmnist.core import runs
from fmnist.core.checks import check
from fmnist.core.data import load_splits
from fmnist.core.errors import one_line_errors
from fmnist.core.machine import cpu_runtime, heap_kept, resolve_device
from fmnist.ops.loop import build_model, build_optimizer
from fmnist.ops.training import train

log = logging.getLogger(__name__)


def plain_epoch(cfg: DictConfig, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one epoch of the simplest loop: shuffled index slices, forward, loss, backward, step."""
    model = build_model(cfg.model).to(x.device)
    optimizer = build_optimizer(cfg.optimizer, model)
    t0 = time.perf_counter()
    perm = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), cfg.data.batch_size):
        idx = perm[i : i + cfg.data.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench(cfg: DictConfig) -> dict:
    check(cfg)
    cpu_runtime(cfg.trainer)
    device = resolve_device(cfg.trainer.device)
    data = load_splits(cfg.data, device)
    epochs = cfg.trainer.max_epochs
    plain = [plain_epoch(cfg, data.train_x, data.train_y) for _ in range(epochs)]
    summary = train(cfg)  # the real thing, in the same process, on the same images
    rows = [{k: float(v) for k, v in r.items()} for r in runs.read_csv(Path(cfg.paths.output_dir) / "metrics.csv")]
    plain += [plain_epoch(cfg, data.train_x, data.train_y) for _ in range(epochs)]  # before and after: fair to drift
    result = {
        "model": dict(summary["arch"]),
        "batch_size": cfg.data.batch_size,
        "train_images": len(data.train_x),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "malloc_heap": heap_kept(),
        "torch": torch.__version__,
        "plain_loop_seconds_per_epoch": statistics.median(plain),
        "fmnist_train_seconds_per_epoch": statistics.median(r["train_seconds"] for r in rows),
        "fmnist_epoch_seconds_with_eval": statistics.median(r["epoch_seconds"] for r in rows),
        "epochs_each": epochs,
        "logger": cfg.logger.name if cfg.logger.name == "none" else f"wandb ({cfg.logger.mode})",
    }
    result["ratio_train_vs_plain"] = result["fmnist_train_seconds_per_epoch"] / result["plain_loop_seconds_per_epoch"]
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.trainer.resume = False
        if cfg.trainer.progress == "auto":
            cfg.trainer.progress = True  # include the bar's cost, as a user at a terminal sees it
    result = bench(cfg)
    runs.write_json(result, Path(cfg.paths.output_dir) / "bench_train.json")
    print(
        f"\nmodel {result['model']}  batch {result['batch_size']}  {result['train_images']} images  "
        f"{result['device']}  {result['threads']} threads{'  glibc heap kept' if result['malloc_heap'] else ''}  "
        f"torch {result['torch']}\n"
        f"plain PyTorch loop:          {result['plain_loop_seconds_per_epoch']:.2f} s/epoch (median of "
        f"{2 * result['epochs_each']})\n"
        f"fmnist.train training pass:  {result['fmnist_train_seconds_per_epoch']:.2f} s/epoch "
        f"({result['ratio_train_vs_plain']:.2f}x the plain loop; bar and running metrics included)\n"
        f"fmnist.train whole epoch:    {result['fmnist_epoch_seconds_with_eval']:.2f} s/epoch (plus val+test "
        f"evaluation, checkpoints, CSV, {result['logger']})"
    )


if __name__ == "__main__":
    main()
