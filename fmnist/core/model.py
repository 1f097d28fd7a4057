"""The study's CNN: conv1 -> ReLU -> conv2 -> ReLU -> flatten -> fc1 -> ReLU -> fc2 (no padding, no pooling)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fmnist.core.errors import ConfigError

SIDE, CLASSES = 28, 10
ARCH_KEYS = ("conv1_channels", "conv1_kernel", "conv2_channels", "conv2_kernel", "fc1_size")  # the checkpoint's arch
INITS = {
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "normal": lambda w: nn.init.normal_(w, 0.0, 0.01),  # the study's "normal": small N(0, 0.01^2) weights
}


def map_sides(conv1_kernel: int, conv2_kernel: int) -> tuple[int, int]:
    """Side of the square feature map after conv1 and after conv2 (valid convolutions)."""
    h1 = SIDE - conv1_kernel + 1
    return h1, h1 - conv2_kernel + 1


@dataclass(frozen=True)
class Layer:
    """One layer of the network as an architecture sizes it. `layers(arch)` is the one description that the model,
    the FLOPs count, the latency tables, per-layer timing and unit removal all read."""

    name: str  # the module's attribute on FashionCNN: conv1, conv2, fc1, fc2
    width: str | None  # the arch key of its output units (what pruning changes); None for the output layer
    in_shape: tuple[int, ...]  # per image: (channels, side, side) into a conv, (features,) into a linear
    out_shape: tuple[int, ...]
    kernel: int | None  # a conv's kernel side; None for a linear layer
    relu: bool  # followed by a ReLU (every layer but the output)

    @property
    def conv(self) -> bool:
        return self.kernel is not None

    @property
    def units(self) -> int:
        """Output channels or neurons."""
        return self.out_shape[0]

    @property
    def fan_in(self) -> int:
        """Inputs one output value reads: c_in*k*k for a conv, the in features for a linear layer."""
        return self.in_shape[0] * self.kernel**2 if self.conv else self.in_shape[0]

    @property
    def outputs(self) -> int:
        """Output values per image."""
        return math.prod(self.out_shape)

    @property
    def key(self) -> str:
        """What the layer's time depends on, as a latency table's key: 'conv2:12x26x26->16,k5', 'fc2:100->10'."""
        return f"{self.name}:{'x'.join(map(str, self.in_shape))}->{self.units}" + (
            f",k{self.kernel}" if self.conv else ""
        )

    def module(self) -> nn.Module:
        """A fresh torch layer of this shape (without its ReLU)."""
        if self.conv:
            return nn.Conv2d(self.in_shape[0], self.units, self.kernel)
        return nn.Linear(self.in_shape[0], self.units)


def layers(arch: dict) -> list[Layer]:
    """The network's layers in order, each with its per-image input and output shapes."""
    c1, k1, c2, k2, f1 = (arch[k] for k in ARCH_KEYS)
    h1, h2 = map_sides(k1, k2)
    return [
        Layer("conv1", "conv1_channels", (1, SIDE, SIDE), (c1, h1, h1), k1, relu=True),
        Layer("conv2", "conv2_channels", (c1, h1, h1), (c2, h2, h2), k2, relu=True),
        Layer("fc1", "fc1_size", (c2 * h2 * h2,), (f1,), None, relu=True),  # flatten keeps channel-major h2*h2 blocks
        Layer("fc2", None, (f1,), (CLASSES,), None, relu=False),
    ]


# prunable layer -> its width key (every layer but the output), read off the description
WIDTHS = {layer.name: layer.width for layer in layers(dict.fromkeys(ARCH_KEYS, 1)) if layer.width}


def check_arch(arch: dict) -> None:
    """Reject an impossible architecture with a message that names the key (before any data is loaded)."""
    for key in ARCH_KEYS:
        value = arch.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model.{key}={value!r} must be a whole number >= 1")
    h1, h2 = map_sides(arch["conv1_kernel"], arch["conv2_kernel"])
    if h1 < 1 or h2 < 1:
        raise ConfigError(
            f"model.conv1_kernel={arch['conv1_kernel']} and model.conv2_kernel={arch['conv2_kernel']} "
            f"leave no feature map of a {SIDE}x{SIDE} image (conv1 gives {h1}x{h1}, conv2 {h2}x{h2}); "
            f"their sum must be at most {SIDE + 1}"
        )


class FashionCNN(nn.Module):
    """The study's network. `arch` (the five ARCH_KEYS) is all that is needed to rebuild it from a checkpoint."""

    def __init__(
        self,
        conv1_channels: int,
        conv1_kernel: int,
        conv2_channels: int,
        conv2_kernel: int,
        fc1_size: int,
        weight_init: str,
    ):  # no defaults: the presets in conf/model/ are the one home of every architecture
        super().__init__()
        self.arch = dict(
            conv1_channels=conv1_channels,
            conv1_kernel=conv1_kernel,
            conv2_channels=conv2_channels,
            conv2_kernel=conv2_kernel,
            fc1_size=fc1_size,
        )
        check_arch(self.arch)
        if weight_init not in INITS:
            raise ConfigError(f"model.weight_init={weight_init!r} is unknown; use one of {', '.join(INITS)}")
        self.layers = layers(self.arch)
        for layer in self.layers:  # self.conv1, self.conv2, self.fc1, self.fc2
            module = layer.module()
            INITS[weight_init](module.weight)
            nn.init.zeros_(module.bias)
            setattr(self, layer.name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10) logits
        for layer in self.layers:  # (B, c1, h1, h1) -> (B, c2, h2, h2) -> flatten -> (B, f1) -> (B, 10)
            x = self.step(layer, x)
        return x

    def step(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        """One layer with its ReLU; a linear layer flattens what comes in (channel-major, as fc1 expects)."""
        x = getattr(self, layer.name)(x if layer.conv else x.flatten(1))
        return torch.relu(x) if layer.relu else x


def build(arch: dict, weight_init: str = "xavier_normal") -> FashionCNN:
    """A model from an architecture dict (extra keys such as _target_ are ignored). The init only matters for a model
    that will be trained; one rebuilt from a checkpoint gets its weights loaded over it."""
    return FashionCNN(**{k: arch[k] for k in ARCH_KEYS}, weight_init=weight_init)


def widths(arch: dict) -> str:
    """'(c1, c2, f1)': the three widths that pruning changes, as the study writes them."""
    return f"({arch['conv1_channels']}, {arch['conv2_channels']}, {arch['fc1_size']})"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
