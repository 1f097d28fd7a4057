"""Why pruning saves less time than FLOPs: `python -m fmnist.bench_conv` times one convolution + ReLU of the study's
shapes over a range of channel counts and prints milliseconds and multiply-adds per second for each."""

from __future__ import annotations

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
from fmnist.core.machine import cpu_runtime

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}  # both eager PyTorch


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
    if not c.layouts or any(layout not in LAYOUTS for layout in c.layouts):
        raise ConfigError(f"bench_conv.layouts={c.layouts}: give a list of one or more of {', '.join(LAYOUTS)}")


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


def bench_conv(cfg: DictConfig) -> list[dict]:
    c = check(cfg, bench_conv=check_bench_conv).bench_conv
    cpu_runtime(cfg.trainer)
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
            for layout in c.layouts:
                ms = time_conv(c_in, c_out, c.kernel, c.side, c.batch_size, layout, c.repeats)
                row[f"{layout}_ms"], row[f"{layout}_gmacs"] = ms, macs / ms / 1e6
            rows.append(row)
    return rows


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_conv")
@one_line_errors
def main(cfg: DictConfig) -> None:
    rows = bench_conv(cfg)
    runs.write_json(
        {"rows": rows, "threads": torch.get_num_threads(), "torch": torch.__version__},
        Path(cfg.paths.output_dir) / "bench_conv.json",
    )
    c = cfg.bench_conv
    layouts = list(c.layouts)
    print(
        f"relu(conv{c.kernel}x{c.kernel}) on a batch of {c.batch_size} {c.side}x{c.side} maps, "
        f"{torch.get_num_threads()} threads, median of {c.repeats}: ms (GMAC/s)"
    )
    print(f"{'c_in':>4} {'c_out':>5} {'MMAC':>7} " + " ".join(f"{layout:>20}" for layout in layouts))
    for r in rows:
        cells = " ".join(f"{r[f'{lay}_ms']:>9.1f} ({r[f'{lay}_gmacs']:>5.1f})".rjust(20) for lay in layouts)
        print(f"{r['c_in']:>4} {r['c_out']:>5} {r['macs'] / 1e6:>7.0f} {cells}")


if __name__ == "__main__":
    main()
