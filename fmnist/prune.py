"""Norm-based structured pruning: `python -m fmnist.prune [prune.checkpoint=PATH] [prune=norm_finetune]`.

Units (conv channels, fc1 neurons) are scored by the norm of their weights and the weakest is removed physically,
one step at a time, layer after layer (conv1, then conv2, then fc1; never the output layer). A step is kept while
validation accuracy stays within `prune.tolerance` of the unpruned model's; the first step beyond it is reverted
and pruning moves to the next layer. The result is a normal, smaller FashionCNN.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from fmnist import checkpoint, config, runs
from fmnist.data import load_splits
from fmnist.errors import UserError, one_line_errors
from fmnist.flops import totals
from fmnist.loop import evaluate, finetune, resolve_device, set_threads
from fmnist.model import WIDTHS as LAYERS  # prunable layer -> its width key
from fmnist.model import FashionCNN, build

log = logging.getLogger(__name__)

NEXT = {"conv1": "conv2", "conv2": "fc1", "fc1": "fc2"}  # whose inputs shrink with it
COLUMNS = ("step", "layer", "unit", "norm", "conv1_channels", "conv2_channels", "fc1_size", "study_flops", "macs",
           "params", "val_accuracy", "test_accuracy", "status")  # fmt: skip


def unit_norms(model: FashionCNN, layer: str, criterion: str = "l2") -> torch.Tensor:
    """One score per output unit of `layer`: the L1 or L2 norm of the weights that produce it."""
    weight = getattr(model, layer).weight.detach()
    return weight.flatten(1).norm(p=1 if criterion == "l1" else 2, dim=1)


def remove_units(model: FashionCNN, layer: str, units: list[int]) -> FashionCNN:
    """A new, physically smaller model without `units` of `layer`; the next layer loses the matching inputs."""
    n = model.arch[LAYERS[layer]]
    keep = torch.tensor([u for u in range(n) if u not in set(units)])
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[f"{layer}.weight"], sd[f"{layer}.bias"] = sd[f"{layer}.weight"][keep], sd[f"{layer}.bias"][keep]
    nxt = sd[f"{NEXT[layer]}.weight"]
    if layer == "conv2":  # flatten is channel-major: each conv2 channel owns one block of h2*h2 fc1 inputs
        sd["fc1.weight"] = nxt.view(nxt.shape[0], n, -1)[:, keep].reshape(nxt.shape[0], -1)
    else:  # conv2 input channels or fc2 input columns
        sd[f"{NEXT[layer]}.weight"] = nxt[:, keep]
    smaller = build({**model.arch, LAYERS[layer]: len(keep)})
    smaller.load_state_dict(sd)
    return smaller.to(next(model.parameters()).device)


def resolve_checkpoint(spec: str | None, sweeps_dir: Path) -> Path:
    """A .pt from a .pt, a run folder, a sweep folder or a best.json; by default the newest sweep's best."""
    path = Path(spec) if spec else runs.newest(sweeps_dir, "sweep")
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


def _row(step, layer, unit, norm, model, val, test, status) -> dict:
    counts = totals(model.arch)
    return {"step": step, "layer": layer, "unit": unit, "norm": norm, **{k: model.arch[k] for k in LAYERS.values()},
            "study_flops": counts["study_flops"], "macs": counts["macs"], "params": counts["params"],
            "val_accuracy": val, "test_accuracy": test, "status": status}  # fmt: skip


def prune(cfg: DictConfig) -> dict:
    """Prune the checkpoint per cfg.prune; write trajectory.csv, pruned.pt, summary.json and plots."""
    p = config.check(cfg).prune
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = resolve_checkpoint(p.checkpoint, Path(cfg.paths.sweeps_dir))
    model, ckpt = checkpoint.load_model(source)
    log.info("pruning %s (architecture %s)", source, model.arch)
    set_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.trainer.seed)
    device = resolve_device(cfg.trainer.device)
    model.to(device)
    data = load_splits(cfg.data, device)
    shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
    bs = cfg.trainer.eval_batch_size

    def scores(m):
        return evaluate(m, data.val_x, data.val_y, bs)[1], evaluate(m, data.test_x, data.test_y, bs)[1]

    base_val, base_test = scores(model)
    rows = [_row(0, "", "", "", model, base_val, base_test, "start")]
    original = model
    run = runs.start_wandb(cfg, out_dir, job_type="prune", group=cfg.logger.get("group") or "prune")
    if run:
        run.define_metric("*", step_metric="step")
    started = time.perf_counter()
    try:
        for layer in p.layers:
            step = p.step if isinstance(p.step, int) else p.step[layer]
            while model.arch[LAYERS[layer]] - step >= p.min_units:
                norms = unit_norms(model, layer, p.criterion)
                units = norms.argsort()[:step].tolist()
                candidate = remove_units(model, layer, units)
                if p.finetune_epochs:
                    finetune(candidate, cfg.optimizer, data, cfg.data.batch_size, p.finetune_epochs, shuffle,
                             p.finetune_lr)  # fmt: skip
                val, test = scores(candidate)
                kept = base_val - val <= p.tolerance
                row = _row(len(rows), layer, " ".join(map(str, units)), " ".join(f"{norms[u]:.4f}" for u in units),
                           candidate, val, test, "kept" if kept else "reverted")  # fmt: skip
                rows.append(row)
                log.info("%-5s -unit %-4s (c1, c2, f1) = (%d, %d, %d)  val %.2f%%  test %.2f%%  %s", layer,
                         row["unit"], *(candidate.arch[k] for k in LAYERS.values()), 100 * val, 100 * test,
                         row["status"])  # fmt: skip
                if run:
                    run.log({k: v for k, v in row.items() if isinstance(v, int | float)} | {"layer": layer})
                if not kept:
                    break
                model = candidate
        if p.final_finetune_epochs:  # recovery once the architecture is final
            finetune(model, cfg.optimizer, data, cfg.data.batch_size, p.final_finetune_epochs, shuffle, p.finetune_lr)
            val, test = scores(model)
            rows.append(_row(len(rows), "final", "", "", model, val, test, "finetuned"))
            log.info("final fine-tuning (%s epochs): val %.2f%%  test %.2f%%", p.final_finetune_epochs, 100 * val,
                     100 * test)  # fmt: skip
        summary = _write_outputs(cfg, out_dir, source, ckpt, original, model, rows, time.perf_counter() - started)
        if run:
            run.summary.update({f"final/{k}": v for k, v in summary["after"].items() if not isinstance(v, dict)})
        return summary
    finally:
        if run:
            run.finish()


def _write_outputs(cfg, out_dir, source, ckpt, original, model, rows, seconds) -> dict:
    runs.write_csv(rows, COLUMNS, out_dir / "trajectory.csv")
    final = [r for r in rows if r["status"] in ("start", "kept", "finetuned")][-1]

    def describe(m, row):
        return {"arch": dict(m.arch), **totals(m.arch), "val_accuracy": row["val_accuracy"],
                "test_accuracy": row["test_accuracy"]}  # fmt: skip

    before, after = describe(original, rows[0]), describe(model, final)
    checkpoint.save(
        {"arch": dict(model.arch), "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
         "epoch": ckpt.get("epoch", 0), "metrics": {k: after[k] for k in ("val_accuracy", "test_accuracy")},
         "pruned_from": str(source)},
        out_dir / "pruned.pt",
    )  # fmt: skip
    summary = {
        "source_checkpoint": str(source.resolve()),
        "pruned_checkpoint": str((out_dir / "pruned.pt").resolve()),
        "before": before,
        "after": after,
        "flops_ratio": before["study_flops"] / after["study_flops"],
        "steps": len(rows) - 1,
        "seconds": seconds,
        "prune": OmegaConf.to_container(cfg.prune, resolve=True),
    }
    from fmnist.plots import pruning_plots

    summary["plots"] = [str(p) for p in pruning_plots(rows, out_dir)]
    runs.write_summary("prune", summary, out_dir)
    log.info("(c1, c2, f1) %s -> %s: %.2fx fewer study FLOPs, test %.2f%% -> %.2f%%",
             *(tuple(d["arch"][k] for k in LAYERS.values()) for d in (before, after)), summary["flops_ratio"],
             100 * before["test_accuracy"], 100 * after["test_accuracy"])  # fmt: skip
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="prune")
@one_line_errors
def main(cfg: DictConfig) -> float:
    return prune(cfg)["after"]["test_accuracy"]


if __name__ == "__main__":
    main()
