"""Operation and parameter counts of the study's network as functions of its architecture.

Two counts, named everywhere:
- `macs`: multiply-accumulates of the convolutions and linear layers (torch's FlopCounterMode reports 2 x macs);
- `study_flops`: the study's formula, one per multiply-add plus 2 per conv/fc1 output (bias add and ReLU):
  conv out_h*out_w*(c_in*k*k)*c_out + 2*c_out*out_h*out_w; fc1 f1*in + 2*f1; fc2 f1*10.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from fmnist.core.model import layers


def conv_macs(out_side: int, c_in: int, kernel: int, c_out: int) -> int:
    """Multiply-accumulates of one image through a valid convolution: out_h*out_w*(c_in*k*k)*c_out."""
    return out_side * out_side * (c_in * kernel * kernel) * c_out


def layer_counts(arch: dict) -> dict[str, dict[str, int]]:
    """Per layer: macs, study_flops and params, from (c1, k1, c2, k2, f1) alone (fmnist.core.model.layers)."""
    counts = {}
    for layer in layers(arch):
        macs = layer.outputs * layer.fan_in  # one multiply-add per input each output value reads
        bias_relu = 2 * layer.outputs if layer.relu else 0  # the study counts a conv's or fc1's bias add and ReLU
        counts[layer.name] = {"macs": macs, "study_flops": macs + bias_relu, "params": layer.units * (layer.fan_in + 1)}
    return counts


def totals(arch: dict) -> dict[str, int]:
    """Whole-network macs, study_flops and params per image."""
    layers = layer_counts(arch).values()
    return {key: sum(layer[key] for layer in layers) for key in ("macs", "study_flops", "params")}


def counted_macs(model, batch: int = 1) -> int:
    """MACs per image as torch.utils.flop_counter counts them on the real modules (it counts 2 per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(batch, 1, 28, 28))
    return counter.get_total_flops() // (2 * batch)
