"""Inference benchmark: `python -m fmnist.bench` times the original and the pruned checkpoint over the 60 000
training images (as the study did): same batch size and threads, warm-up first, interleaved repeats, median."""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from fmnist import checkpoint
from fmnist.data import normalize, read_raw
from fmnist.errors import UserError, one_line_errors
from fmnist.flops import totals
from fmnist.model import widths
from fmnist.train import evaluate, resolve_device, write_json

log = logging.getLogger(__name__)


def resolve_models(b: DictConfig, log_dir: Path) -> tuple[Path, Path, Path | None]:
    """(original .pt, pruned .pt, prune folder) from bench.original/pruned or a prune run's summary.json."""
    if b.original and b.pruned:
        return Path(b.original), Path(b.pruned), None
    prune_dir = Path(b.prune_dir) if b.prune_dir else None
    if prune_dir is None:
        found = sorted((log_dir / "prune").glob("**/summary.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"no prune run under {log_dir / 'prune'}: run `python -m fmnist.prune` first, or give "
                            "bench.prune_dir=DIR or bench.original=PT bench.pruned=PT")  # fmt: skip
        prune_dir = found[-1].parent
    summary_file = prune_dir / "summary.json"
    if not summary_file.exists():
        raise UserError(f"{prune_dir} has no summary.json: give a folder written by `python -m fmnist.prune`")
    summary = json.loads(summary_file.read_text())
    return Path(summary["source_checkpoint"]), Path(summary["pruned_checkpoint"]), prune_dir


def _prepare(model: torch.nn.Module, b: DictConfig, example: torch.Tensor):
    model.eval()
    if b.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if b.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold the weights into the graph, as for deployment
        model = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            model(example)  # compile outside the timed passes
    return model


def _one_pass(model, x: torch.Tensor, batch_size: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.inference_mode()
def layer_times(model, x: torch.Tensor, repeats: int = 10) -> dict[str, float]:
    """Milliseconds per batch spent in each layer (conv+ReLU counted together): where a model's time goes."""
    times, h = {}, x
    steps = [("conv1", lambda t: torch.relu(model.conv1(t))), ("conv2", lambda t: torch.relu(model.conv2(t))),
             ("fc1", lambda t: torch.relu(model.fc1(t.flatten(1)))), ("fc2", model.fc2)]  # fmt: skip
    for name, fn in steps:
        fn(h)
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = fn(h)
        times[name] = 1000 * (time.perf_counter() - t0) / repeats
        h = out
    return times


def bench(cfg: DictConfig) -> dict:
    b = cfg.bench
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    device = resolve_device(cfg.trainer.device)
    original_path, pruned_path, prune_dir = resolve_models(b, Path(cfg.paths.log_dir))
    (train_x, _), (test_x, test_y) = read_raw(cfg.data.root, cfg.data.system_dir, cfg.data.download)
    x = normalize(train_x[: b.images], cfg.data.mean, cfg.data.std, device)  # the study timed all 60 000
    if b.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    test_x, test_y = normalize(test_x, cfg.data.mean, cfg.data.std, device), test_y.to(device)  # read once
    entries = {}
    for name, path in (("original", original_path), ("pruned", pruned_path)):
        model, _ = checkpoint.load_model(path)
        model.to(device).eval()
        _, test_acc = evaluate(model, test_x, test_y, cfg.trainer.eval_batch_size)
        entries[name] = {"checkpoint": str(path.resolve()), "arch": dict(model.arch), **totals(model.arch),
                         "test_accuracy": test_acc, "layer_ms_per_batch": layer_times(model, x[: b.batch_size]),
                         "model": _prepare(model, b, x[: b.batch_size]), "seconds_all": []}  # fmt: skip
    for r in range(b.warmup + b.repeats):  # interleaved, so drift on a shared machine hits both alike
        for entry in entries.values():
            seconds = _one_pass(entry["model"], x, b.batch_size)
            if r >= b.warmup:
                entry["seconds_all"].append(seconds)
    for entry in entries.values():
        del entry["model"]
        entry["seconds"] = statistics.median(entry["seconds_all"])
        entry["images_per_s"] = len(x) / entry["seconds"]
    orig, pruned = entries["original"], entries["pruned"]
    return {
        **entries,
        "speedup": orig["seconds"] / pruned["seconds"],
        "flops_ratio": orig["study_flops"] / pruned["study_flops"],
        "macs_ratio": orig["macs"] / pruned["macs"],
        "images": len(x),
        "batch_size": b.batch_size,
        "repeats": b.repeats,
        "channels_last": b.channels_last,
        "compile": b.compile,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "prune_dir": str(prune_dir.resolve()) if prune_dir else None,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> float:
    result = bench(cfg)
    write_json(result, Path(cfg.paths.output_dir) / "bench.json")
    o, p = result["original"], result["pruned"]
    print(
        f"inference over {result['images']} training images, batch {result['batch_size']}, "
        f"{result['threads']} threads, {result['device']} ({result['cpu']}), torch {result['torch']}, "
        f"channels_last={result['channels_last']}, compile={result['compile']}, median of {result['repeats']}\n"
        f"original {widths(o['arch'])}: {o['seconds']:.3f} s ({o['images_per_s']:.0f} img/s), "
        f"{o['study_flops']} FLOPs/img, test {100 * o['test_accuracy']:.2f}%\n"
        f"pruned   {widths(p['arch'])}: {p['seconds']:.3f} s ({p['images_per_s']:.0f} img/s), "
        f"{p['study_flops']} FLOPs/img, test {100 * p['test_accuracy']:.2f}%\n"
        f"speedup {result['speedup']:.2f}x  vs  FLOPs ratio {result['flops_ratio']:.2f}x (study: ~11x)\n"
        f"ms per batch by layer, original {_fmt(o['layer_ms_per_batch'])}; pruned {_fmt(p['layer_ms_per_batch'])}"
    )
    return result["speedup"]


def _fmt(times: dict) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in times.items())


if __name__ == "__main__":
    main()
