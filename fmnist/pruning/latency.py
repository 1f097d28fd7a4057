"""Measured per-layer inference time: the table that `fmnist.prune` reads with prune.cost=latency or
prune.target_speedup, and that `python -m fmnist.latency` fills.

Every shape pruning can give a layer (its input shape, units and kernel: `Layer.key` of fmnist.core.model, each
with its ReLU) is timed alone on random weights and inputs, one batch of latency.batch_size images per call, on one
engine with the trainer's threads; the median of latency.repeats calls. A model's predicted time per batch is the
sum of its four layers' times: measured, not modelled (oneDNN's kernel choice is irregular: docs/benchmarks.md).
Tables are cached under latency.dir, one file per CPU, engine, torch version, threads, batch size and
trainer.malloc_heap (eager times depend on it); one from another machine or engine is refused. Prune measures any
shape the table lacks and adds it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fmnist.core import runs
from fmnist.core.checks import integer, one_of
from fmnist.core.errors import UserError
from fmnist.core.machine import cpu_name, heap_kept
from fmnist.core.model import Layer, layers
from fmnist.pruning.engines import compile_openvino, missing, openvino

# bf16: eager under bf16 autocast, as fmnist.bench's bf16 engine; openvino: OpenVINO's CPU plugin at its default
# precision (bf16 where the CPU has it natively), openvino_f32 forced to f32, as fmnist.bench's engines of those names
ENGINES = ("eager", "onnxruntime", "bf16", "openvino", "openvino_f32")
KEYS = "Layer.key"  # how entries are named (fmnist.core.model): a table keyed otherwise is refused, not misread


def machine(engine: str, threads: int, batch_size: int) -> dict:
    """What a table's times depend on (with ONNX Runtime's version too, added by LatencyTable.open); a table is
    valid only where all of it matches."""
    return {
        "cpu": cpu_name(),
        "engine": engine,
        "torch": torch.__version__,
        "threads": threads,
        "batch_size": batch_size,
        "malloc_heap": heap_kept(),
    }


def check_latency(lat: DictConfig) -> None:
    one_of(lat.engine, "latency.engine", ENGINES)
    integer(lat.batch_size, "latency.batch_size")
    integer(lat.repeats, "latency.repeats")
    integer(lat.warmup, "latency.warmup", 0)


def table_path(lat: DictConfig, threads: int | None = None) -> Path:
    """latency.table, or where this machine's cached table for latency.engine lives; it may not exist yet."""
    if lat.table:
        return Path(lat.table)
    return Path(lat.dir) / cache_name(machine(lat.engine, threads or torch.get_num_threads(), lat.batch_size))


def _onnxruntime():
    try:
        import onnxruntime  # heavy, and optional: only the onnxruntime engine needs it
    except ImportError:
        raise UserError(
            "latency.engine=onnxruntime but onnxruntime is not installed: pip install onnxruntime, "
            "or latency.engine=eager"
        ) from None
    return onnxruntime


def _openvino_layer(module: nn.Module, in_shape: tuple[int, ...], engine: str):
    """The layer compiled by OpenVINO's CPU plugin, built from OpenVINO's own operations (Convolution or MatMul, the
    bias, then Relu) as one small graph: converting ~600 torch layers would take minutes. The whole model's converted
    graph fuses the same bias and Relu into each convolution and matmul."""
    ov = openvino()
    import openvino.opset13 as ops  # with openvino: only these engines build graphs

    first = module[0] if isinstance(module, nn.Sequential) else module
    x = ops.parameter([-1, *in_shape], np.float32, name="x")
    weight, bias = first.weight.detach().numpy(), first.bias.detach().numpy()
    if isinstance(first, nn.Conv2d):
        z = ops.convolution(x, ops.constant(weight), [1, 1], [0, 0], [0, 0], [1, 1])
        z = ops.add(z, ops.constant(bias.reshape(1, -1, 1, 1)))
    else:
        z = ops.add(ops.matmul(x, ops.constant(weight), False, True), ops.constant(bias))
    if isinstance(module, nn.Sequential):
        z = ops.relu(z)
    return compile_openvino(ov.Model([z], [x], "layer"), engine)  # as fmnist.bench compiles the whole model


def openvino_precision(engine: str) -> str:
    """What the CPU plugin computes in for this engine on this machine (bf16 or f32): part of a table's machine."""
    ov = openvino()
    if engine == "openvino_f32":
        return "f32"
    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def _layer(layer: Layer) -> nn.Module:
    """The layer with its ReLU, on random weights."""
    return nn.Sequential(layer.module(), nn.ReLU()) if layer.relu else layer.module()


def _onnx_graph(module: nn.Module, in_shape: tuple[int, ...]) -> bytes:
    """The layer as a one-node ONNX graph (Conv or Gemm, then Relu), built directly: exporting ~600 layers through
    torch.onnx would take minutes, and ONNX Runtime fuses Conv+Relu here as it does in the exported whole model."""
    from onnx import TensorProto, helper, numpy_helper  # heavy: only the onnxruntime engine builds graphs

    first = module[0] if isinstance(module, nn.Sequential) else module
    relu = isinstance(module, nn.Sequential)
    init = [
        numpy_helper.from_array(first.weight.detach().numpy(), "w"),
        numpy_helper.from_array(first.bias.detach().numpy(), "b"),
    ]
    op = (
        helper.make_node("Conv", ["x", "w", "b"], ["z"])
        if isinstance(first, nn.Conv2d)
        else helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1)
    )
    nodes = [op, helper.make_node("Relu", ["z"], ["y"])] if relu else [op, helper.make_node("Identity", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every supported ONNX Runtime reads
    return model.SerializeToString()


@torch.inference_mode()
def measure(layer: Layer, engine: str, batch_size: int, repeats: int, warmup: int) -> float:
    """Median milliseconds of one call of the layer on a batch of random inputs."""
    torch.manual_seed(0)
    module = _layer(layer).eval()
    x = torch.randn(batch_size, *layer.in_shape)
    if engine == "onnxruntime":
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1  # as fmnist.bench
        session = ort.InferenceSession(_onnx_graph(module, layer.in_shape), options, providers=["CPUExecutionProvider"])
        inputs = {"x": x.numpy()}

        def run():
            return session.run(None, inputs)
    elif engine.startswith("openvino"):
        compiled, inputs = _openvino_layer(module, layer.in_shape, engine), x.numpy()

        def run():
            return compiled(inputs)
    elif engine == "bf16":

        def run():
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return module(x)
    else:

        def run():
            return module(x)

    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


class LatencyTable:
    """Milliseconds per batch of each layer shape on one machine and engine; measures what it lacks."""

    def __init__(self, path: Path, meta: dict, entries: dict[str, float], repeats: int, warmup: int):
        self.path, self.meta, self.entries = path, meta, entries
        self.repeats, self.warmup = repeats, warmup
        self.measured = 0  # entries measured since loading

    @classmethod
    def open(cls, lat: DictConfig, threads: int | None = None) -> LatencyTable:
        """The table for this machine (latency.table, or its cache file under latency.dir); empty if none yet."""
        if lat.engine not in ENGINES:
            raise UserError(f"latency.engine={lat.engine!r}: per-layer tables exist for {', '.join(ENGINES)}")
        meta = machine(lat.engine, threads or torch.get_num_threads(), lat.batch_size)
        if lat.engine == "onnxruntime":
            meta["onnxruntime"] = _onnxruntime().__version__
        if lat.engine.startswith("openvino"):
            if why := missing(lat.engine):
                raise UserError(f"latency.engine={lat.engine}: {why}, or choose another latency.engine")
            meta["openvino"] = openvino().__version__
            meta["precision"] = openvino_precision(lat.engine)  # bf16 or f32, as the CPU plugin resolves it here
        path = table_path(lat, threads)
        entries = {}
        if path.exists():
            try:
                saved = json.loads(path.read_text())
                entries = {k: float(v) for k, v in saved["entries"].items()}
                theirs = saved["meta"]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(
                    f"{path} is not a latency table ({e}): delete it, or rebuild with `python -m fmnist.latency`"
                ) from e
            if theirs != meta:
                diff = ", ".join(f"{k} {theirs.get(k)!r} here {v!r}" for k, v in meta.items() if theirs.get(k) != v)
                raise UserError(
                    f"{path} was measured elsewhere ({diff}): its times do not hold here; build this "
                    "machine's with `python -m fmnist.latency` (latency.table=null)"
                )
        elif lat.table:
            raise UserError(
                f"latency.table={lat.table} does not exist: build it with `python -m fmnist.latency`, or "
                "latency.table=null for this machine's cached one"
            )
        return cls(path, meta, entries, lat.repeats, lat.warmup)

    def layer_ms(self, layer: Layer) -> float:
        if layer.key not in self.entries:
            meta = self.meta
            self.entries[layer.key] = measure(layer, meta["engine"], meta["batch_size"], self.repeats, self.warmup)
            self.measured += 1
        return self.entries[layer.key]

    def layers_ms(self, arch: dict) -> dict[str, float]:
        return {layer.name: self.layer_ms(layer) for layer in layers(arch)}

    def model_ms(self, arch: dict) -> float:
        """Predicted milliseconds per batch of latency.batch_size images: the sum of the layers' times."""
        return sum(self.layers_ms(arch).values())

    def save(self) -> Path:
        return runs.write_json({"meta": self.meta, "entries": dict(sorted(self.entries.items()))}, self.path)


def cache_name(meta: dict) -> str:
    cpu = hashlib.sha1(meta["cpu"].encode()).hexdigest()[:8]
    heap = "-heap" if meta.get("malloc_heap") else ""  # trainer.malloc_heap: eager times depend on it
    return f"{meta['engine']}-torch{meta['torch']}-t{meta['threads']}-b{meta['batch_size']}{heap}-cpu{cpu}.json"
