"""Why pruning saves less time than FLOPs, engine by engine: `python -m fmnist.bench_conv` times one convolution +
ReLU of the study's shapes over a range of channel counts on each of bench_conv.engines and prints milliseconds and
multiply-adds per second for each: the staircase a pruned width climbs down on that engine."""

from __future__ import annotations

import importlib
import logging
import statistics
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig

from fmnist.core import runs
from fmnist.core.checks import check, integer
from fmnist.core.errors import ConfigError, one_line_errors
from fmnist.core.flops import conv_macs
from fmnist.core.machine import cpu_name, cpu_runtime
from fmnist.core.model import Layer
from fmnist.pruning.engines import missing
from fmnist.pruning.latency import ENGINES as TABLED
from fmnist.pruning.latency import measure

log = logging.getLogger(__name__)

LAYOUTS = {"eager": torch.contiguous_format, "channels_last": torch.channels_last}  # eager PyTorch, NCHW or NHWC
# the latency tables' engines time the layer as the tables do (fmnist/pruning/latency.py)
ENGINES = (*LAYOUTS, *(e for e in TABLED if e not in LAYOUTS))


def check_bench_conv(c: DictConfig) -> None:
    for key in ("in_channels", "out_channels"):
        values = c[key]
        if not isinstance(values, ListConfig | list) or not values:
            raise ConfigError(f"bench_conv.{key}={values}: give a list of channel counts")
        for v in values:
            integer(v, f"bench_conv.{key}[]")
    integer(c.side, "bench_conv.side")
    integer(c.kernel, "bench_conv.kernel", 1, c.side)
    integer(c.batch_size, "bench_conv.batch_size")
    integer(c.repeats, "bench_conv.repeats")
    if not isinstance(c.engines, ListConfig | list) or not c.engines or any(e not in ENGINES for e in c.engines):
        raise ConfigError(f"bench_conv.engines={c.engines}: give a list of one or more of {', '.join(ENGINES)}")


@torch.inference_mode()
def time_conv(c_in: int, c_out: int, kernel: int, side: int, batch: int, layout: str, repeats: int) -> float:
    """Median milliseconds of relu(conv2d) on a (batch, c_in, side, side) random input (valid padding, as the model)."""
    fmt = LAYOUTS[layout]
    x = torch.randn(batch, c_in, side, side).contiguous(memory_format=fmt)
    w = torch.randn(c_out, c_in, kernel, kernel).contiguous(memory_format=fmt)
    b = torch.randn(c_out)
    torch.relu(F.conv2d(x, w, b))  # warm-up: oneDNN picks and builds its kernel on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.relu(F.conv2d(x, w, b))
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def time_engine(c_in: int, c_out: int, kernel: int, side: int, batch: int, engine: str, repeats: int) -> float:
    if engine in LAYOUTS:
        return time_conv(c_in, c_out, kernel, side, batch, engine, repeats)
    out = side - kernel + 1
    layer = Layer("conv2", "conv2_channels", (c_in, side, side), (c_out, out, out), kernel, relu=True)
    return measure(layer, engine, batch, repeats, warmup=3)  # a fresh session's first calls are slow


def bench_conv(cfg: DictConfig) -> tuple[list[dict], list[str], dict[str, str]]:
    """The rows (one per width), the engines timed, and the engines skipped with why (a package not installed)."""
    c = check(cfg, bench_conv=check_bench_conv).bench_conv
    cpu_runtime(cfg.trainer)
    skipped = {e: why for e in c.engines if (why := missing(e))}
    for engine, why in skipped.items():
        log.warning("bench_conv: %s skipped: %s", engine, why)
    engines = [e for e in c.engines if e not in skipped]
    rows = []
    for c_in in c.in_channels:
        for c_out in c.out_channels:
            macs = c.batch_size * conv_macs(c.side - c.kernel + 1, c_in, c.kernel, c_out)
            row = {
                "c_in": c_in,
                "c_out": c_out,
                "kernel": c.kernel,
                "side": c.side,
                "batch_size": c.batch_size,
                "macs": macs,
            }
            for engine in engines:
                ms = time_engine(c_in, c_out, c.kernel, c.side, c.batch_size, engine, c.repeats)
                row[f"{engine}_ms"], row[f"{engine}_gmacs"] = ms, macs / ms / 1e6
            rows.append(row)
    return rows, engines, skipped


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_conv")
@one_line_errors
def main(cfg: DictConfig) -> None:
    rows, engines, skipped = bench_conv(cfg)
    versions = {"torch": torch.__version__}
    for package in ("onnxruntime", "openvino"):
        if any(e.startswith(package) for e in engines):
            versions[package] = importlib.import_module(package).__version__
    runs.write_json(
        {
            "rows": rows,
            "engines": engines,
            "skipped": skipped,
            "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            **versions,
        },
        Path(cfg.paths.output_dir) / "bench_conv.json",
    )
    c = cfg.bench_conv
    print(
        f"relu(conv{c.kernel}x{c.kernel}) on a batch of {c.batch_size} {c.side}x{c.side} maps, "
        f"{torch.get_num_threads()} threads, median of {c.repeats}: ms (GMAC/s)"
    )
    print(f"{'c_in':>4} {'c_out':>5} {'MMAC':>7} " + " ".join(f"{engine:>20}" for engine in engines))
    for r in rows:
        cells = " ".join(f"{r[f'{lay}_ms']:>9.1f} ({r[f'{lay}_gmacs']:>5.1f})".rjust(20) for lay in engines)
        print(f"{r['c_in']:>4} {r['c_out']:>5} {r['macs'] / 1e6:>7.0f} {cells}")


if __name__ == "__main__":
    main()
