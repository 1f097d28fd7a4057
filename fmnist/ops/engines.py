"""Inference engines: a trained model run by eager PyTorch, channels-last, torch.compile or an ONNX export on ONNX
Runtime, each built before it is timed; and one timed pass over a set of images."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig

from fmnist.core.checks import integer
from fmnist.core.errors import ConfigError, UserError

ENGINES = ("eager", "channels_last", "compile", "onnxruntime")


def engine_runner(model: torch.nn.Module, engine: str, example: torch.Tensor, onnx_path: Path) -> Callable:
    """A function images -> logits that runs `model` on one inference engine; built (and compiled) before timing."""
    model = copy.deepcopy(model).eval()
    if engine == "eager":
        return model
    if engine == "channels_last":  # NHWC tensors and weights: oneDNN's preferred layout for convs
        model = model.to(memory_format=torch.channels_last)
        return lambda x: model(x.contiguous(memory_format=torch.channels_last))
    if engine == "compile":
        import torch._inductor.config as inductor_config  # inductor is heavy to import: only for this engine

        inductor_config.freezing = True  # constant-fold the weights into the graph, as for deployment
        return torch.compile(model, dynamic=False)
    if engine == "onnxruntime":  # an inference-mode export: ONNX graph run by ONNX Runtime's CPU kernels
        import onnxruntime  # heavy, and optional: only for this engine

        if example.is_cuda:
            raise UserError("bench.engines: onnxruntime is timed on the CPU only; drop it or set trainer.device=cpu")
        for name in ("onnxscript", "onnx_ir"):  # their per-pass INFO lines would bury the benchmark's log
            logging.getLogger(name).setLevel(logging.WARNING)
        torch.onnx.export(model, (example,), onnx_path, input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False)  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1  # same threads
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x.numpy()})[0]
    raise UserError(f"bench.engines: unknown engine {engine!r}; use some of {', '.join(ENGINES)}")


def one_pass(run: Callable, x: torch.Tensor, batch_size: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            run(x[i : i + batch_size])
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.inference_mode()
def layer_times(model, x: torch.Tensor, repeats: int = 10) -> dict[str, float]:
    """Milliseconds per batch spent in each layer (conv+ReLU counted together, eager): where a model's time goes."""
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


def check_bench(b: DictConfig) -> None:
    integer(b.images, "bench.images", 1, 60_000)
    integer(b.batch_size, "bench.batch_size")
    integer(b.repeats, "bench.repeats")
    integer(b.warmup, "bench.warmup", 0)
    engines = list(b.engines) if isinstance(b.engines, ListConfig | list) else None
    if not engines or any(e not in ENGINES for e in engines):
        raise ConfigError(f"bench.engines={b.engines}: give a list of one or more of {', '.join(ENGINES)}")
    if (b.original is None) != (b.pruned is None):
        raise ConfigError("bench.original and bench.pruned go together: give both checkpoints, or bench.prune_dir")
