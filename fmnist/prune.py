"""Norm-based structured pruning: `python -m fmnist.prune [prune.checkpoint=PATH] [prune=norm_finetune]`.

Units (conv channels, fc1 neurons) are scored by the norm of their weights and the weakest is removed physically,
one step at a time. The study's method (prune.selection=layerwise) goes layer after layer (conv1, then conv2, then
fc1; never the output layer): a step is kept while validation accuracy stays within `prune.tolerance` of the
unpruned model's; the first step beyond it is reverted and pruning moves to the next layer. Beyond the study,
prune.selection=global weighs every layer's next step by the accuracy it costs per FLOP or per measured millisecond
saved (prune.cost=flops|latency, the latency table of fmnist/latency.py). Either stops early at a budget:
prune.target_flops_ratio and/or prune.target_speedup. The result is a normal, smaller FashionCNN.
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
from fmnist.latency import LatencyTable, lattice, table_path
from fmnist.loop import cpu_runtime, evaluate, finetune, resolve_device
from fmnist.model import WIDTHS as LAYERS  # prunable layer -> its width key
from fmnist.model import FashionCNN, build, widths

log = logging.getLogger(__name__)

NEXT = {"conv1": "conv2", "conv2": "fc1", "fc1": "fc2"}  # whose inputs shrink with it
COLUMNS = ("step", "layer", "unit", "norm", "conv1_channels", "conv2_channels", "fc1_size", "study_flops", "macs",
           "params", "predicted_ms", "val_accuracy", "test_accuracy", "status")  # fmt: skip


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


def _row(step, layer, unit, norm, model, val, test, status, table=None) -> dict:
    counts = totals(model.arch)
    return {"step": step, "layer": layer, "unit": unit, "norm": norm, **{k: model.arch[k] for k in LAYERS.values()},
            "study_flops": counts["study_flops"], "macs": counts["macs"], "params": counts["params"],
            "predicted_ms": round(table.model_ms(model.arch), 3) if table else "",
            "val_accuracy": val, "test_accuracy": test, "status": status}  # fmt: skip


def floor_arch(arch: dict, p) -> dict:
    """The smallest architecture pruning can reach: every pruned layer stepped down as far as min_units allows."""
    return {**arch, **{LAYERS[layer]: lattice(arch[LAYERS[layer]], _step(p, layer), p.min_units)[-1]
                       for layer in p.layers}}  # fmt: skip


def _step(p, layer: str) -> int:
    return p.step if isinstance(p.step, int) else p.step[layer]


class Budget:
    """How far to prune: prune.target_flops_ratio (the study's FLOPs formula) and/or prune.target_speedup (predicted
    by the latency table), all met; without either, only the tolerance stops pruning."""

    def __init__(self, p, arch: dict, table: LatencyTable | None):
        self.flops_ratio, self.speedup, self.table = p.target_flops_ratio, p.target_speedup, table
        self.flops0 = totals(arch)["study_flops"]
        self.ms0 = table.model_ms(arch) if table else None
        floor = floor_arch(arch, p)
        if self.flops_ratio and self.flops(floor) < self.flops_ratio:
            raise UserError(f"prune.target_flops_ratio={self.flops_ratio} cannot be met: pruning {list(p.layers)} "
                            f"down to min_units={p.min_units} gives {widths(floor)}, {self.flops(floor):.2f}x "
                            "fewer FLOPs at most")  # fmt: skip
        if self.speedup and self.speed(floor) < self.speedup:
            raise UserError(f"prune.target_speedup={self.speedup} cannot be met on {table.meta['engine']}: "
                            f"pruning {list(p.layers)} down to min_units={p.min_units} gives {widths(floor)}, "
                            f"predicted {self.speed(floor):.2f}x faster at most")  # fmt: skip

    @property
    def given(self) -> bool:
        return bool(self.flops_ratio or self.speedup)

    def flops(self, arch: dict) -> float:
        return self.flops0 / totals(arch)["study_flops"]

    def speed(self, arch: dict) -> float | None:
        return self.ms0 / self.table.model_ms(arch) if self.table else None

    def met(self, arch: dict) -> bool:
        return self.given and (not self.flops_ratio or self.flops(arch) >= self.flops_ratio) and \
            (not self.speedup or self.speed(arch) >= self.speedup)  # fmt: skip

    def report(self, arch: dict, stopped: str) -> dict:
        return {"target_flops_ratio": self.flops_ratio, "target_speedup": self.speedup, "met": self.met(arch),
                "flops_ratio": self.flops(arch), "predicted_speedup": self.speed(arch), "stopped": stopped}  # fmt: skip


class _Pruning:
    """What one prune run shares between its steps: data, scores, the trajectory, W&B, cost and budget."""

    def __init__(self, cfg, model, data, table, budget, run):
        self.cfg, self.p, self.data, self.table, self.budget, self.run = cfg, cfg.prune, data, table, budget, run
        self.shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
        self.base_val, base_test = self.scores(model)
        self.cost0 = self.cost(model.arch)  # the unpruned model's, for prune.min_saving
        self.rows = [_row(0, "", "", "", model, self.base_val, base_test, "start", table)]

    def val(self, m) -> float:
        return evaluate(m, self.data.val_x, self.data.val_y, self.cfg.trainer.eval_batch_size)[1]

    def scores(self, m) -> tuple[float, float]:
        return self.val(m), evaluate(m, self.data.test_x, self.data.test_y, self.cfg.trainer.eval_batch_size)[1]

    def finetune(self, m, epochs) -> None:
        if epochs:
            finetune(m, self.cfg.optimizer, self.data, self.cfg.data.batch_size, epochs, self.shuffle,
                     self.p.finetune_lr)  # fmt: skip

    def cost(self, arch: dict) -> float:
        return self.table.model_ms(arch) if self.p.cost == "latency" else totals(arch)["study_flops"]

    def weakest(self, model, layer, count: int | None = None) -> tuple[list[int], torch.Tensor]:
        norms = unit_norms(model, layer, self.p.criterion)
        return norms.argsort()[: count or _step(self.p, layer)].tolist(), norms

    def removal(self, model, layer) -> int:
        """How many units global selection's candidate takes from `layer`: one step; with prune.min_saving, the
        fewest steps that save that share of the unpruned model's cost (NetAdapt's per-iteration reduction: a
        kernel's time falls in cliffs, e.g. fc1 on ONNX Runtime at 16 neurons, which one step at a time never sees),
        or, where no width saves that much, the layer's cheapest width. 0: the layer is at min_units."""
        width = model.arch[LAYERS[layer]]
        smaller = lattice(width, _step(self.p, layer), self.p.min_units)[1:]
        if not smaller or not self.p.min_saving:
            return width - smaller[0] if smaller else 0
        cost = self.cost(model.arch)
        costs = [(w, self.cost({**model.arch, LAYERS[layer]: w})) for w in smaller]
        enough = [w for w, c in costs if cost - c >= self.p.min_saving * self.cost0]
        return width - (enough[0] if enough else min(costs, key=lambda wc: wc[1])[0])

    def record(self, layer, units, norms, candidate, val, test) -> bool:
        """Log one step; True if it is kept (within prune.tolerance of the unpruned model's validation accuracy)."""
        kept = self.p.tolerance is None or self.base_val - val <= self.p.tolerance
        row = _row(len(self.rows), layer, " ".join(map(str, units)), " ".join(f"{norms[u]:.4f}" for u in units),
                   candidate, val, test, "kept" if kept else "reverted", self.table)  # fmt: skip
        self.rows.append(row)
        speed = f"  {self.budget.speed(candidate.arch):.2f}x predicted" if self.table else ""
        log.info("%-5s -unit %-4s (c1, c2, f1) = %s  val %.2f%%  test %.2f%%  %.2fx FLOPs%s  %s", layer, row["unit"],
                 widths(candidate.arch), 100 * val, 100 * test, self.budget.flops(candidate.arch), speed,
                 row["status"])  # fmt: skip
        if self.run:
            self.run.log({k: v for k, v in row.items() if isinstance(v, int | float)} | {"layer": layer})
        return kept

    def layerwise(self, model) -> tuple[FashionCNN, str]:
        """The study's method: the weakest unit(s) of one layer at a time, layer after layer, until a step costs more
        than the tolerance (then the next layer) or the budget is met."""
        for layer in self.p.layers:
            while model.arch[LAYERS[layer]] - _step(self.p, layer) >= self.p.min_units:
                if self.budget.met(model.arch):
                    return model, "budget met"
                units, norms = self.weakest(model, layer)
                candidate = remove_units(model, layer, units)
                self.finetune(candidate, self.p.finetune_epochs)
                if not self.record(layer, units, norms, candidate, *self.scores(candidate)):
                    break
                model = candidate
        return model, "budget met" if self.budget.met(model.arch) else "every layer done"

    def global_(self, model) -> tuple[FashionCNN, str]:
        """Beyond the study: at every step, each layer's weakest unit(s) (prune.min_saving: as many as save that
        much) are removed in turn and fine-tuned alike; the candidate that loses the least validation accuracy per
        unit of cost saved (FLOPs or predicted time) is taken. Stops at the budget, or at the first step beyond the
        tolerance."""
        before = self.base_val  # the current model's validation accuracy, from its own step
        while not self.budget.met(model.arch):
            state, cost = self.shuffle.get_state(), self.cost(model.arch)
            candidates = []
            for layer in self.p.layers:
                count = self.removal(model, layer)
                if not count:
                    continue
                units, norms = self.weakest(model, layer, count)
                candidate = remove_units(model, layer, units)
                self.shuffle.set_state(state)  # every candidate fine-tunes on the same batches
                self.finetune(candidate, self.p.finetune_epochs)
                val, saved = self.val(candidate), cost - self.cost(candidate.arch)
                candidates.append((layer, units, norms, candidate, val, saved, self.shuffle.get_state()))
                log.debug("candidate %s %s: val %.4f, saves %.4g", layer, widths(candidate.arch), val, saved)
            if not candidates:
                return model, "every layer at min_units"
            saving = [c for c in candidates if c[5] > 0]
            # a candidate that saves nothing (a slower kernel for fewer channels) goes only when none saves anything
            layer, units, norms, candidate, val, _, state = (
                min(saving, key=lambda c: (before - c[4]) / c[5]) if saving else max(candidates, key=lambda c: c[4])
            )
            self.shuffle.set_state(state)
            if not self.record(layer, units, norms, candidate, val, self.scores(candidate)[1]):
                return model, f"tolerance: the best next step ({layer}) loses more than {self.p.tolerance}"
            model, before = candidate, val
        return model, "budget met"


def prune(cfg: DictConfig) -> dict:
    """Prune the checkpoint per cfg.prune; write trajectory.csv, pruned.pt, summary.json and plots."""
    p = config.check(cfg).prune
    out_dir = Path(cfg.paths.output_dir)
    source = resolve_checkpoint(p.checkpoint, Path(cfg.paths.sweeps_dir))
    model, ckpt = checkpoint.load_model(source)
    log.info("pruning %s (architecture %s)", source, model.arch)
    cpu_runtime(cfg.trainer)
    # needed, or built already (then every trajectory shows predicted times); otherwise no table is touched
    needed = p.cost == "latency" or p.target_speedup or table_path(cfg.latency, cfg.trainer.threads).exists()
    table = LatencyTable.open(cfg.latency, cfg.trainer.threads) if needed else None
    try:
        budget = Budget(p, model.arch, table)  # an unreachable budget is refused before anything is written
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.trainer.seed)
        device = resolve_device(cfg.trainer.device)
        model.to(device)
        original = model
        run = runs.start_wandb(cfg, out_dir, job_type="prune", group=cfg.logger.get("group") or "prune")
        if run:
            run.define_metric("*", step_metric="step")
        started = time.perf_counter()
        try:
            state = _Pruning(cfg, model, load_splits(cfg.data, device), table, budget, run)
            model, stopped = state.layerwise(model) if p.selection == "layerwise" else state.global_(model)
            if budget.given and not budget.met(model.arch):
                log.warning("budget not met: %s reached %.2fx fewer FLOPs%s; stopped by %s", widths(model.arch),
                            budget.flops(model.arch), f", {budget.speed(model.arch):.2f}x predicted speedup"
                            if table else "", stopped)  # fmt: skip
            if p.final_finetune_epochs:  # recovery once the architecture is final
                state.finetune(model, p.final_finetune_epochs)
                val, test = state.scores(model)
                state.rows.append(_row(len(state.rows), "final", "", "", model, val, test, "finetuned", table))
                log.info("final fine-tuning (%s epochs): val %.2f%%  test %.2f%%", p.final_finetune_epochs, 100 * val,
                         100 * test)  # fmt: skip
            summary = _write_outputs(cfg, out_dir, source, ckpt, original, model, state.rows,
                                     time.perf_counter() - started, budget.report(model.arch, stopped))  # fmt: skip
            if run:
                run.summary.update({f"final/{k}": v for k, v in summary["after"].items() if not isinstance(v, dict)})
            return summary
        finally:
            if run:
                run.finish()
    finally:
        if table and table.measured:  # shapes measured on the way are kept for the next run
            table.save()


def _write_outputs(cfg, out_dir, source, ckpt, original, model, rows, seconds, budget: dict) -> dict:
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
        "predicted_speedup": budget["predicted_speedup"],  # by the latency table, when one was used
        "budget": budget,
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
