"""The course study this repo reproduces: its published figures (the only numbers not read from run outputs), and
the facts derived from this repo's own config (its search space, its basic model), each read from its one home."""

from __future__ import annotations

import functools
import math
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from fmnist.core.model import ARCH_KEYS, WIDTHS

CONF = Path(__file__).resolve().parents[2] / "conf"

# The study's published figures.
PUBLISHED = {
    "basic_train_accuracy": 0.9114,
    "basic_test_accuracy": 0.8932,
    "top3_test_accuracy": [0.9010, 0.9001, 0.8997],
    "grid_epochs": "40-50",
    "pruned_widths": (1, 7, 72),  # (c1, c2, f1) of its pruned model
    "pruned_test_accuracy": 0.8762,
    "speedup": 11,  # "about 11x faster" inference over the 60 000 training images
}


@functools.cache
def search_space() -> dict[str, list]:
    """The study's grid as conf/hparams_search/study_grid.yaml declares it: dotted key -> its choices."""
    params = OmegaConf.load(CONF / "hparams_search" / "study_grid.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    return {key: list(parser.parse_override(f"{key}={value}").value().list) for key, value in params.items()}


def grid_points() -> int:
    return math.prod(len(choices) for choices in search_space().values())


@functools.cache
def preset(name: str) -> dict:
    """A model preset's architecture keys: conf/model/NAME.yaml over the presets its defaults list names."""
    node = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    merged = OmegaConf.create()
    for base in node.get("defaults", []):  # e.g. [medium, _self_]: the presets extend medium
        merged = OmegaConf.merge(merged, preset(base)) if base != "_self_" else merged
    merged = OmegaConf.merge(merged, {k: v for k, v in node.items() if k != "defaults"})
    return {k: merged[k] for k in ARCH_KEYS}


def pruned_arch() -> dict:
    """The study's pruned model: the medium preset with its (c1, c2, f1)."""
    return {**preset("medium"), **dict(zip(WIDTHS.values(), PUBLISHED["pruned_widths"], strict=True))}
