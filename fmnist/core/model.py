"""The study's CNN: conv1 -> ReLU -> conv2 -> ReLU -> flatten -> fc1 -> ReLU -> fc2 (no padding, no pooling)."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.core.errors import ConfigError

SIDE, CLASSES = 28, 10
ARCH_KEYS = ("conv1_channels", "conv1_kernel", "conv2_channels", "conv2_kernel", "fc1_size")
WIDTHS = {"conv1": "conv1_channels", "conv2": "conv2_channels", "fc1": "fc1_size"}  # prunable layer -> its width key
INITS = {
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "normal": lambda w: nn.init.normal_(w, 0.0, 0.01),  # the study's "normal": small N(0, 0.01^2) weights
}


def map_sides(conv1_kernel: int, conv2_kernel: int) -> tuple[int, int]:
    """Side of the square feature map after conv1 and after conv2 (valid convolutions)."""
    h1 = SIDE - conv1_kernel + 1
    return h1, h1 - conv2_kernel + 1


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
            conv1_channels=conv1_channels, conv1_kernel=conv1_kernel, conv2_channels=conv2_channels,
            conv2_kernel=conv2_kernel, fc1_size=fc1_size,
        )  # fmt: skip
        check_arch(self.arch)
        if weight_init not in INITS:
            raise ConfigError(f"model.weight_init={weight_init!r} is unknown; use one of {', '.join(INITS)}")
        _, h2 = map_sides(conv1_kernel, conv2_kernel)
        self.conv1 = nn.Conv2d(1, conv1_channels, conv1_kernel)
        self.conv2 = nn.Conv2d(conv1_channels, conv2_channels, conv2_kernel)
        self.fc1 = nn.Linear(conv2_channels * h2 * h2, fc1_size)  # flatten keeps channel-major blocks of h2*h2
        self.fc2 = nn.Linear(fc1_size, CLASSES)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            INITS[weight_init](layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10) logits
        x = torch.relu(self.conv1(x))  # (B, c1, h1, h1)
        x = torch.relu(self.conv2(x))  # (B, c2, h2, h2)
        x = torch.relu(self.fc1(x.flatten(1)))  # (B, f1)
        return self.fc2(x)


def build(arch: dict, weight_init: str = "xavier_normal") -> FashionCNN:
    """A model from an architecture dict (extra keys such as _target_ are ignored). The init only matters for a model
    that will be trained; one rebuilt from a checkpoint gets its weights loaded over it."""
    return FashionCNN(**{k: arch[k] for k in ARCH_KEYS}, weight_init=weight_init)


def widths(arch: dict) -> str:
    """'(c1, c2, f1)': the three widths that pruning changes, as the study writes them."""
    return f"({arch['conv1_channels']}, {arch['conv2_channels']}, {arch['fc1_size']})"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
