"""Norm-based structured pruning: `python -m fmnist.prune [prune.checkpoint=PATH] [prune=norm_finetune]`.

Units (conv channels, fc1 neurons) are scored by the norm of their weights and the weakest is removed physically,
one step at a time. The study's method (prune.selection=layerwise) goes layer after layer (conv1, then conv2, then
fc1; never the output layer): a step is kept while validation accuracy stays within `prune.tolerance` of the
unpruned model's; the first step beyond it is reverted and pruning moves to the next layer. Beyond the study,
prune.selection=global weighs every layer's next step by the accuracy it costs per FLOP or per measured millisecond
saved (prune.cost=flops|latency, the latency table of fmnist/pruning/latency.py). Either stops early at a budget:
prune.target_flops_ratio and/or prune.target_speedup. The result is a normal, smaller FashionCNN.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from fmnist.analysis.plots import pruning_plots
from fmnist.core import checkpoint, runs
from fmnist.core.checks import check
from fmnist.core.data import load_splits
from fmnist.core.errors import one_line_errors
from fmnist.core.flops import totals
from fmnist.core.machine import cpu_runtime, resolve_device
from fmnist.core.model import WIDTHS as LAYERS
from fmnist.core.model import widths
from fmnist.core.precision import resolve as resolve_precision
from fmnist.pruning.latency import LatencyTable, check_latency, table_path
from fmnist.pruning.selection import COLUMNS, Budget, Pruning, check_prune, row
from fmnist.training.loop import step_times

log = logging.getLogger(__name__)


def prune(cfg: DictConfig) -> dict:
    """Prune the checkpoint per cfg.prune; write trajectory.csv, pruned.pt, summary.json and plots."""
    p = check(cfg, prune=check_prune, latency=check_latency).prune
    out_dir = Path(cfg.paths.output_dir)
    source = runs.resolve_checkpoint(p.checkpoint, Path(cfg.paths.sweeps_dir))
    model, ckpt = checkpoint.load_model(source)
    log.info("pruning %s (architecture %s)", source, model.arch)
    cpu_runtime(cfg.trainer)
    # needed, or built already (then every trajectory shows predicted times); otherwise no table is touched
    needed = p.cost == "latency" or p.target_speedup or table_path(cfg.latency, cfg.trainer.threads).exists()
    table = LatencyTable.open(cfg.latency, cfg.trainer.threads) if needed else None
    try:
        budget = Budget(p, model.arch, table)  # an unreachable budget is refused before anything is written
        device = resolve_device(cfg.trainer.device)
        timing = functools.partial(
            step_times, model, cfg.optimizer, cfg.data.batch_size, device, cfg.trainer.precision_cache
        )
        precision = resolve_precision(cfg.trainer.precision, device, timing=timing)
        log.info("precision %(used)s (%(why)s)", precision)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.trainer.seed)
        model.to(device)
        original = model
        run = runs.start_wandb(cfg, out_dir, job_type="prune", group=cfg.logger.get("group") or "prune")
        if run:
            run.define_metric("*", step_metric="step")
        started = time.perf_counter()
        try:
            state = Pruning(cfg, model, load_splits(cfg.data, device), table, budget, run, precision["used"])
            model, stopped = state.layerwise(model) if p.selection == "layerwise" else state.global_(model)
            if budget.given and not budget.met(model.arch):
                log.warning(
                    "budget not met: %s reached %.2fx fewer FLOPs%s; stopped by %s",
                    widths(model.arch),
                    budget.flops(model.arch),
                    f", {budget.speed(model.arch):.2f}x predicted speedup" if table else "",
                    stopped,
                )
            final = None
            if p.final_finetune_epochs:  # recovery once the architecture is final, its best-validation pass kept
                final = state.final(model, p.final_finetune_epochs)
                val, test = state.scores(model)
                state.rows.append(row(len(state.rows), "final", "", "", model, val, test, "finetuned", table))
                log.info(
                    "final fine-tuning (%s epochs): pass %d of %d kept, val %.2f%%  test %.2f%%",
                    p.final_finetune_epochs,
                    final["kept"],
                    final["passes"],
                    100 * val,
                    100 * test,
                )
            summary = _write_outputs(
                cfg,
                out_dir,
                source,
                ckpt,
                original,
                model,
                state.rows,
                time.perf_counter() - started,
                budget.report(model.arch, stopped),
                precision,
                final,
            )
            if run:
                run.summary.update({f"final/{k}": v for k, v in summary["after"].items() if not isinstance(v, dict)})
            return summary
        finally:
            if run:
                run.finish()
    finally:
        if table and table.measured:  # shapes measured on the way are kept for the next run
            table.save()


def _write_outputs(
    cfg,
    out_dir,
    source,
    ckpt,
    original,
    model,
    rows,
    seconds,
    budget: dict,
    precision: dict,
    passes: dict | None = None,
) -> dict:
    runs.write_csv(rows, COLUMNS, out_dir / "trajectory.csv")
    final = [r for r in rows if r["status"] in ("start", "kept", "finetuned")][-1]

    def describe(m, step):
        return {
            "arch": dict(m.arch),
            **totals(m.arch),
            "val_accuracy": step["val_accuracy"],
            "test_accuracy": step["test_accuracy"],
        }

    before, after = describe(original, rows[0]), describe(model, final)
    checkpoint.save(
        {
            "arch": dict(model.arch),
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "epoch": ckpt.get("epoch", 0),
            "metrics": {k: after[k] for k in ("val_accuracy", "test_accuracy")},
            "pruned_from": str(source),
        },
        out_dir / "pruned.pt",
    )
    summary = {
        "source_checkpoint": str(source.resolve()),
        "pruned_checkpoint": str((out_dir / "pruned.pt").resolve()),
        "before": before,
        "after": after,
        "flops_ratio": before["study_flops"] / after["study_flops"],
        "predicted_speedup": budget["predicted_speedup"],  # by the latency table, when one was used
        "budget": budget,
        "steps": len(rows) - 1,
        "seconds": seconds,
        "precision": precision,  # of evaluation and fine-tuning (trainer.precision)
        "seed": cfg.trainer.seed,  # fine-tuning's batch order (and the latency-aware search's sampling)
        "final_finetune": passes,  # its passes' validation accuracy and the one kept; None without one
        "prune": OmegaConf.to_container(cfg.prune, resolve=True),
    }
    summary["plots"] = [str(p) for p in pruning_plots(rows, out_dir)]
    runs.write_summary("prune", summary, out_dir)
    log.info(
        "(c1, c2, f1) %s -> %s: %.2fx fewer study FLOPs, test %.2f%% -> %.2f%%",
        *(tuple(d["arch"][k] for k in LAYERS.values()) for d in (before, after)),
        summary["flops_ratio"],
        100 * before["test_accuracy"],
        100 * after["test_accuracy"],
    )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="prune")
@one_line_errors
def main(cfg: DictConfig) -> float:
    return prune(cfg)["after"]["test_accuracy"]


if __name__ == "__main__":
    main()
