"""How one layer loses units: scores (the norm of a unit's weights), physical removal with the next layer's inputs,
and the widths a layer passes through on its way down. Torch-Pruning's `pruner/function.py`, for this network."""

from __future__ import annotations

import torch

from fmnist.core.model import WIDTHS as LAYERS  # prunable layer -> its width key
from fmnist.core.model import FashionCNN, build


def unit_norms(model: FashionCNN, layer: str, criterion: str = "l2") -> torch.Tensor:
    """One score per output unit of `layer`: the L1 or L2 norm of the weights that produce it."""
    weight = getattr(model, layer).weight.detach()
    return weight.flatten(1).norm(p=1 if criterion == "l1" else 2, dim=1)


def remove_units(model: FashionCNN, layer: str, units: list[int]) -> FashionCNN:
    """A new, physically smaller model without `units` of `layer`; the next layer loses the matching inputs."""
    names = [lay.name for lay in model.layers]
    this, after = model.layers[names.index(layer)], model.layers[names.index(layer) + 1]  # whose inputs shrink with it
    keep = torch.tensor([u for u in range(this.units) if u not in set(units)])
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[f"{layer}.weight"], sd[f"{layer}.bias"] = sd[f"{layer}.weight"][keep], sd[f"{layer}.bias"][keep]
    nxt = sd[f"{after.name}.weight"]
    if this.conv and not after.conv:  # flatten is channel-major: each channel owns one block of side*side inputs
        sd[f"{after.name}.weight"] = nxt.view(nxt.shape[0], this.units, -1)[:, keep].reshape(nxt.shape[0], -1)
    else:  # the next conv's input channels or the next linear layer's input columns
        sd[f"{after.name}.weight"] = nxt[:, keep]
    smaller = build({**model.arch, LAYERS[layer]: len(keep)})
    smaller.load_state_dict(sd)
    return smaller.to(next(model.parameters()).device)


def step_of(step, layer: str) -> int:
    """prune.step: one number for every layer, or one per layer ({conv1: 1, conv2: 1, fc1: 4})."""
    return step if isinstance(step, int) else step.get(layer, 1)


def lattice(width: int, step: int, min_units: int) -> list[int]:
    """The widths a layer of `width` units passes through, `step` units at a time, never below min_units."""
    return list(range(width, min_units - 1, -step)) or [width]


def floor_arch(arch: dict, layers, step, min_units: int) -> dict:
    """The smallest architecture pruning can reach: every pruned layer stepped down as far as min_units allows."""
    return {
        **arch,
        **{LAYERS[layer]: lattice(arch[LAYERS[layer]], step_of(step, layer), min_units)[-1] for layer in layers},
    }


def reachable(arch: dict, layers, step, min_units: int) -> list[dict]:
    """Every architecture pruning `layers` of `arch` by their steps can reach (widths on each layer's lattice)."""
    options = {}
    for layer, key in LAYERS.items():
        options[key] = lattice(arch[key], step_of(step, layer), min_units) if layer in layers else [arch[key]]
    archs = [dict(arch)]
    for key, widths in options.items():
        archs = [{**a, key: w} for a in archs for w in widths]
    return archs
