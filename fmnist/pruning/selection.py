"""Which units go, and when to stop: the study's layer-after-layer method, global selection by accuracy lost per
FLOP or per measured millisecond saved, and budgets (prune.target_flops_ratio, prune.target_speedup). `Pruning` holds
what one prune run shares between its steps; `python -m fmnist.prune` drives it and writes the outputs.
"""

from __future__ import annotations

import copy
import logging

import torch
from omegaconf import DictConfig, ListConfig

from fmnist.core.checks import integer, number, one_of, optional
from fmnist.core.errors import ConfigError, UserError
from fmnist.core.flops import totals
from fmnist.core.model import WIDTHS as LAYERS  # prunable layer -> its width key
from fmnist.core.model import FashionCNN, widths
from fmnist.pruning.latency import LatencyTable
from fmnist.pruning.units import floor_arch, lattice, reachable, remove_units, step_of, unit_norms
from fmnist.training.loop import evaluate, finetune

log = logging.getLogger(__name__)

# trajectory.csv: one row per step
COLUMNS = (
    "step",
    "layer",
    "unit",
    "norm",
    "conv1_channels",
    "conv2_channels",
    "fc1_size",
    "study_flops",
    "macs",
    "params",
    "predicted_ms",
    "val_accuracy",
    "test_accuracy",
    "status",
)


def check_prune(p: DictConfig) -> None:
    if not isinstance(p.layers, ListConfig | list):
        raise ConfigError(f"prune.layers={p.layers}: give a list of {list(LAYERS)}")
    # no layers: nothing is removed, only the final fine-tuning runs (recovering an already pruned model)
    if not p.layers and not p.final_finetune_epochs:
        raise ConfigError(
            f"prune.layers=[] prunes nothing: give a list of {list(LAYERS)}, or set "
            "prune.final_finetune_epochs to fine-tune the checkpoint only"
        )
    unknown = [layer for layer in p.layers if layer not in LAYERS]
    if unknown:
        raise ConfigError(f"prune.layers has {unknown}: prunable layers are {list(LAYERS)} (fc2 is the output layer)")
    one_of(p.criterion, "prune.criterion", ("l1", "l2"))
    optional(number, p.tolerance, "prune.tolerance", 0, 1)
    if isinstance(p.step, DictConfig):
        for layer in p.layers:
            per_layer = " (one per pruned layer: {conv1: 1, conv2: 1, fc1: 4})"
            integer(p.step.get(layer), f"prune.step.{layer}", fix=per_layer)
    else:
        integer(p.step, "prune.step", fix=" (or one per layer: {conv1: 1, conv2: 1, fc1: 4})")
    integer(p.min_units, "prune.min_units")
    number(p.finetune_epochs, "prune.finetune_epochs", 0)
    optional(number, p.finetune_lr, "prune.finetune_lr", 0, low_open=True)
    number(p.final_finetune_epochs, "prune.final_finetune_epochs", 0)
    one_of(p.selection, "prune.selection", ("layerwise", "global"))
    one_of(p.cost, "prune.cost", ("flops", "latency"))
    optional(number, p.target_flops_ratio, "prune.target_flops_ratio", 1)
    optional(number, p.target_speedup, "prune.target_speedup", 1)
    optional(number, p.min_saving, "prune.min_saving", 0, 1, low_open=True, high_open=True)
    if p.min_saving and p.selection != "global":
        raise ConfigError(
            "prune.min_saving sizes global selection's candidates: set prune.selection=global, "
            "or prune.min_saving=null for the study's one step at a time"
        )
    if p.selection == "global" and p.tolerance is None and not (p.target_flops_ratio or p.target_speedup):
        raise ConfigError(
            "prune.selection=global with no tolerance and no budget would prune every layer to "
            "min_units: set prune.tolerance, prune.target_flops_ratio or prune.target_speedup"
        )


def row(step, layer, unit, norm, model, val, test, status, table=None) -> dict:
    counts = totals(model.arch)
    return {
        "step": step,
        "layer": layer,
        "unit": unit,
        "norm": norm,
        **{k: model.arch[k] for k in LAYERS.values()},
        "study_flops": counts["study_flops"],
        "macs": counts["macs"],
        "params": counts["params"],
        "predicted_ms": round(table.model_ms(model.arch), 3) if table else "",
        "val_accuracy": val,
        "test_accuracy": test,
        "status": status,
    }


def choose(candidates: list[tuple[float, float]], before: float, need: float | None = None) -> int:
    """Global selection's pick among (validation accuracy, cost saved) candidates: the least accuracy lost per unit
    of cost saved. A saving counts only up to `need`, what the budget still asks for: a step that overshoots earns
    nothing for it, so where several reach the budget the one that loses least ends pruning (one conv1 channel at
    (3, 5, 24) jumped 9.0x -> 12.1x when four fc1 neurons reached 9.3x). A candidate that saves nothing (a slower
    kernel for fewer channels) goes only when none saves anything."""
    saving = [i for i, (_, saved) in enumerate(candidates) if saved > 0]
    if not saving:
        return max(range(len(candidates)), key=lambda i: candidates[i][0])

    def lost_per_saved(i: int) -> float:
        val, saved = candidates[i]
        return (before - val) / (min(saved, need) if need else saved)

    return min(saving, key=lost_per_saved)


class Budget:
    """How far to prune: prune.target_flops_ratio (the study's FLOPs formula) and/or prune.target_speedup (predicted
    by the latency table), all met; without either, only the tolerance stops pruning."""

    def __init__(self, p, arch: dict, table: LatencyTable | None):
        self.flops_ratio, self.speedup, self.table = p.target_flops_ratio, p.target_speedup, table
        self.flops0 = totals(arch)["study_flops"]
        self.ms0 = table.model_ms(arch) if table else None
        floor = floor_arch(arch, p.layers, p.step, p.min_units)
        if self.flops_ratio and self.flops(floor) < self.flops_ratio:
            raise UserError(
                f"prune.target_flops_ratio={self.flops_ratio} cannot be met: pruning {list(p.layers)} "
                f"down to min_units={p.min_units} gives {widths(floor)}, {self.flops(floor):.2f}x "
                "fewer FLOPs at most"
            )
        if self.speedup:
            # the fastest width is not always the narrowest: on OpenVINO a one-channel conv runs a slow kernel
            # (conv2 1->1 took 6x conv2 8->16 on an AVX2 EPYC), so every width pruning can reach is looked up
            fastest = max(reachable(arch, p.layers, p.step, p.min_units), key=self.speed)
            if self.speed(fastest) < self.speedup:
                raise UserError(
                    f"prune.target_speedup={self.speedup} cannot be met on {table.meta['engine']}: of the widths "
                    f"pruning {list(p.layers)} can reach (down to min_units={p.min_units}) the fastest, "
                    f"{widths(fastest)}, is predicted {self.speed(fastest):.2f}x faster"
                )

    @property
    def given(self) -> bool:
        return bool(self.flops_ratio or self.speedup)

    def flops(self, arch: dict) -> float:
        return self.flops0 / totals(arch)["study_flops"]

    def speed(self, arch: dict) -> float | None:
        return self.ms0 / self.table.model_ms(arch) if self.table else None

    def cost_target(self, cost: str) -> float | None:
        """The cost (study FLOPs or predicted ms) a model must get down to for this budget's part on `cost`; None
        where the budget says nothing about it."""
        if cost == "flops" and self.flops_ratio:
            return self.flops0 / self.flops_ratio
        if cost == "latency" and self.speedup:
            return self.ms0 / self.speedup
        return None

    def met(self, arch: dict) -> bool:
        return (
            self.given
            and (not self.flops_ratio or self.flops(arch) >= self.flops_ratio)
            and (not self.speedup or self.speed(arch) >= self.speedup)
        )

    def report(self, arch: dict, stopped: str) -> dict:
        return {
            "target_flops_ratio": self.flops_ratio,
            "target_speedup": self.speedup,
            "met": self.met(arch),
            "flops_ratio": self.flops(arch),
            "predicted_speedup": self.speed(arch),
            "stopped": stopped,
        }


class Pruning:
    """What one prune run shares between its steps: data, scores, the trajectory, W&B, cost and budget."""

    def __init__(self, cfg, model, data, table, budget, run, precision: str = "fp32"):
        self.cfg, self.p, self.data, self.table, self.budget, self.run = cfg, cfg.prune, data, table, budget, run
        self.precision = precision  # of evaluation and fine-tuning; the weights stay fp32
        self.shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
        self.base_val, base_test = self.scores(model)
        self.cost0 = self.cost(model.arch)  # the unpruned model's, for prune.min_saving
        self.rows = [row(0, "", "", "", model, self.base_val, base_test, "start", table)]

    def val(self, m) -> float:
        return evaluate(m, self.data.val_x, self.data.val_y, self.cfg.trainer.eval_batch_size, self.precision)[1]

    def scores(self, m) -> tuple[float, float]:
        test = evaluate(m, self.data.test_x, self.data.test_y, self.cfg.trainer.eval_batch_size, self.precision)[1]
        return self.val(m), test

    def finetune(self, m, epochs, after_pass=None) -> None:
        if epochs:
            finetune(
                m,
                self.cfg.optimizer,
                self.data,
                self.cfg.data.batch_size,
                epochs,
                self.shuffle,
                self.p.finetune_lr,
                self.precision,
                after_pass,
            )

    def final(self, m, epochs: float) -> dict:
        """Once the architecture is final: `epochs` passes at finetune_lr with one optimizer, validated after each;
        the model keeps its best-validation pass, as training keeps best.pt. Why: the pruned models' validation
        accuracy was still rising after 10 passes (docs/pruning.md), and with the best pass kept, more passes cannot
        lose on validation. {passes, kept (1-based), val_by_pass}."""
        vals, best = [], {}

        def validate() -> None:
            vals.append(self.val(m))
            if not best or vals[-1] > best["val"]:
                best.update(val=vals[-1], kept=len(vals), state=copy.deepcopy(m.state_dict()))

        self.finetune(m, epochs, after_pass=validate)
        m.load_state_dict(best["state"])
        return {"passes": len(vals), "kept": best["kept"], "val_by_pass": vals}

    def cost(self, arch: dict) -> float:
        return self.table.model_ms(arch) if self.p.cost == "latency" else totals(arch)["study_flops"]

    def weakest(self, model, layer, count: int | None = None) -> tuple[list[int], torch.Tensor]:
        norms = unit_norms(model, layer, self.p.criterion)
        return norms.argsort()[: count or step_of(self.p.step, layer)].tolist(), norms

    def removal(self, model, layer) -> int:
        """How many units global selection's candidate takes from `layer`: one step; with prune.min_saving, the
        fewest steps that save that share of the unpruned model's cost (NetAdapt's per-iteration reduction: a
        kernel's time falls in cliffs, e.g. fc1 on ONNX Runtime at 16 neurons, which one step at a time never sees),
        or, where no width saves that much, the layer's cheapest width. 0: the layer is at min_units."""
        width = model.arch[LAYERS[layer]]
        smaller = lattice(width, step_of(self.p.step, layer), self.p.min_units)[1:]
        if not smaller or not self.p.min_saving:
            return width - smaller[0] if smaller else 0
        cost = self.cost(model.arch)
        costs = [(w, self.cost({**model.arch, LAYERS[layer]: w})) for w in smaller]
        enough = [w for w, c in costs if cost - c >= self.p.min_saving * self.cost0]
        return width - (enough[0] if enough else min(costs, key=lambda wc: wc[1])[0])

    def record(self, layer, units, norms, candidate, val, test) -> bool:
        """Log one step; True if it is kept (within prune.tolerance of the unpruned model's validation accuracy)."""
        kept = self.p.tolerance is None or self.base_val - val <= self.p.tolerance
        entry = row(
            len(self.rows),
            layer,
            " ".join(map(str, units)),
            " ".join(f"{norms[u]:.4f}" for u in units),
            candidate,
            val,
            test,
            "kept" if kept else "reverted",
            self.table,
        )
        self.rows.append(entry)
        speed = f"  {self.budget.speed(candidate.arch):.2f}x predicted" if self.table else ""
        log.info(
            "%-5s -unit %-4s (c1, c2, f1) = %s  val %.2f%%  test %.2f%%  %.2fx FLOPs%s  %s",
            layer,
            entry["unit"],
            widths(candidate.arch),
            100 * val,
            100 * test,
            self.budget.flops(candidate.arch),
            speed,
            entry["status"],
        )
        if self.run:
            self.run.log({k: v for k, v in entry.items() if isinstance(v, int | float)} | {"layer": layer})
        return kept

    def layerwise(self, model) -> tuple[FashionCNN, str]:
        """The study's method: the weakest unit(s) of one layer at a time, layer after layer, until a step costs more
        than the tolerance (then the next layer) or the budget is met."""
        for layer in self.p.layers:
            while model.arch[LAYERS[layer]] - step_of(self.p.step, layer) >= self.p.min_units:
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
        unit of cost saved (FLOPs or predicted time, counted up to what the budget still needs: `choose`) is taken.
        Stops at the budget, or at the first step beyond the tolerance."""
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
            target = self.budget.cost_target(self.p.cost)
            need = cost - target if target is not None and cost > target else None
            pick = choose([(c[4], c[5]) for c in candidates], before, need)
            layer, units, norms, candidate, val, _, state = candidates[pick]
            self.shuffle.set_state(state)
            if not self.record(layer, units, norms, candidate, val, self.scores(candidate)[1]):
                return model, f"tolerance: the best next step ({layer}) loses more than {self.p.tolerance}"
            model, before = candidate, val
        return model, "budget met"
