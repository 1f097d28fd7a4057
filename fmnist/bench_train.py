"""Training speed: `python -m fmnist.bench_train [overrides]` times fmnist's training epochs (progress bar, W&B,
checkpoints and all) beside a plain PyTorch loop over the same preloaded tensors, in one process, in each of
bench_train.precisions, and prints every epoch's time as a ratio of the fp32 plain loop's."""

from __future__ import annotations

import functools
import logging
import statistics
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, open_dict

from fmnist.core import runs
from fmnist.core.checks import check
from fmnist.core.data import load_splits
from fmnist.core.errors import ConfigError, one_line_errors
from fmnist.core.machine import cpu_flags, cpu_name, cpu_runtime, heap_kept, resolve_device
from fmnist.core.precision import NATIVE_BF16, PRECISIONS, autocast, scaler
from fmnist.core.precision import resolve as resolve_precision
from fmnist.training.loop import backward_step, build_model, build_optimizer, step_times
from fmnist.training.run import train

log = logging.getLogger(__name__)
# what bench_train.json gives as a ratio of the first precision's plain-loop epoch
RATIOS = {
    "plain_loop": "plain_loop_seconds_per_epoch",
    "fmnist_train": "fmnist_train_seconds_per_epoch",
    "fmnist_epoch": "fmnist_epoch_seconds_with_eval",
}


def plain_epoch(cfg: DictConfig, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> float:
    """Seconds for one epoch of the simplest loop: shuffled index slices, forward and loss (under autocast in
    bf16/fp16, as fmnist's loop), backward, step."""
    model = build_model(cfg.model).to(x.device)
    optimizer = build_optimizer(cfg.optimizer, model)
    grad_scaler = scaler(precision, x.device)
    t0 = time.perf_counter()
    perm = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), cfg.data.batch_size):
        idx = perm[i : i + cfg.data.batch_size]
        with autocast(precision, x.device):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        backward_step(optimizer, loss, grad_scaler)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def check_bench_train(b: DictConfig) -> None:
    precisions = list(b.precisions) if isinstance(b.precisions, ListConfig | list) else None
    if not precisions or any(p not in PRECISIONS[1:] for p in precisions) or len(set(precisions)) < len(precisions):
        raise ConfigError(
            f"bench_train.precisions={b.precisions}: give a list of distinct ones of {', '.join(PRECISIONS[1:])}"
        )


def bench(cfg: DictConfig) -> dict:
    precisions = list(check(cfg, bench_train=check_bench_train).bench_train.precisions)
    cpu_runtime(cfg.trainer)
    device = resolve_device(cfg.trainer.device)
    for p in precisions:  # one that cannot run here is refused before anything is timed
        resolve_precision(p, device)
    data = load_splits(cfg.data, device)
    epochs = cfg.trainer.max_epochs
    out_dir = Path(cfg.paths.output_dir)

    def plain_round() -> None:  # interleaved: drift of a shared machine hits every precision alike
        for p in precisions:
            plain[p].append(plain_epoch(cfg, data.train_x, data.train_y, p))

    plain: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(epochs):
        plain_round()
    runs_by = {}
    for p in precisions:  # the real thing, in the same process, on the same images
        run_cfg = cfg.copy()
        with open_dict(run_cfg):
            run_cfg.trainer.precision, run_cfg.paths.output_dir = p, str(out_dir / p)
        summary = train(run_cfg)
        rows = [{k: float(v) for k, v in r.items()} for r in runs.read_csv(out_dir / p / "metrics.csv")]
        runs_by[p] = {
            "fmnist_train_seconds_per_epoch": statistics.median(r["train_seconds"] for r in rows),
            "fmnist_epoch_seconds_with_eval": statistics.median(r["epoch_seconds"] for r in rows),
            "test_accuracy_last": summary["last"]["test_accuracy"],
        }
    for _ in range(epochs):  # before and after the runs: fair to drift
        plain_round()
    base = statistics.median(plain[precisions[0]])
    for p, entry in runs_by.items():
        entry["plain_loop_seconds_per_epoch"] = statistics.median(plain[p])
        entry["ratio_train_vs_plain"] = entry["fmnist_train_seconds_per_epoch"] / entry["plain_loop_seconds_per_epoch"]
        entry["vs_first_plain"] = {name: entry[key] / base for name, key in RATIOS.items()}
    timing = functools.partial(
        step_times, build_model(cfg.model), cfg.optimizer, cfg.data.batch_size, device, cfg.trainer.precision_cache
    )
    auto = resolve_precision("auto", device, timing=timing)  # what a run here would choose
    return {
        "model": dict(summary["arch"]),
        "batch_size": cfg.data.batch_size,
        "train_images": len(data.train_x),
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_bf16_flags": sorted(set(NATIVE_BF16) & cpu_flags()),
        "threads": torch.get_num_threads(),
        "malloc_heap": heap_kept(),
        "torch": torch.__version__,
        "epochs_each": epochs,
        "logger": cfg.logger.name if cfg.logger.name == "none" else f"wandb ({cfg.logger.mode})",
        "precisions": runs_by,  # ratios: against the plain loop in the first of bench_train.precisions
        "auto": auto,
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_train")
@one_line_errors
def main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.trainer.resume = False
        if cfg.trainer.progress == "auto":
            cfg.trainer.progress = True  # include the bar's cost, as a user at a terminal sees it
    result = bench(cfg)
    runs.write_json(result, Path(cfg.paths.output_dir) / "bench_train.json")
    first = next(iter(result["precisions"]))
    lines = [
        f"\nmodel {result['model']}  batch {result['batch_size']}  {result['train_images']} images  "
        f"{result['device']} ({result['cpu']}; native bf16: {', '.join(result['cpu_bf16_flags']) or 'none'})  "
        f"{result['threads']} threads{'  glibc heap kept' if result['malloc_heap'] else ''}  torch {result['torch']}",
        f"seconds per epoch (median; plain loop over {2 * result['epochs_each']} epochs, fmnist over "
        f"{result['epochs_each']}) and, in brackets, as a ratio of the {first} plain loop's epoch:",
        f"{'':10}{'plain loop':>18}{'fmnist training pass':>26}{'fmnist whole epoch':>24}",
    ]
    for p, e in result["precisions"].items():
        r = e["vs_first_plain"]
        lines.append(
            f"{p:10}{e['plain_loop_seconds_per_epoch']:>10.2f} ({r['plain_loop']:.2f}x)"
            f"{e['fmnist_train_seconds_per_epoch']:>18.2f} ({r['fmnist_train']:.2f}x)"
            f"{e['fmnist_epoch_seconds_with_eval']:>16.2f} ({r['fmnist_epoch']:.2f}x)"
        )
    lines.append(
        f"the whole epoch adds val+test evaluation, checkpoints, CSV, {result['logger']}; "
        f"trainer.precision=auto picks {result['auto']['used']} here ({result['auto']['why']})"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
