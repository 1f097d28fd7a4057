"""Inference engines: a trained model run by eager PyTorch, channels-last, torch.compile, an ONNX export on ONNX
Runtime (fp32, or int8 by its static post-training quantization), eager under bf16 autocast, or OpenVINO (as
deployed: the CPU's default precision, bf16 where the hardware has it; forced f32; int8 by NNCF's post-training
quantization), each built before it is timed; and one timed pass over a set of images."""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig

from fmnist.core.checks import integer, number, one_of
from fmnist.core.errors import ConfigError, UserError

ENGINES = (
    "eager",
    "channels_last",
    "compile",
    "onnxruntime",
    "onnxruntime_int8",
    "bf16",
    "openvino",
    "openvino_f32",
    "openvino_int8",
)
# engines whose logits differ from fp32's: checked by argmax agreement and test accuracy, not equality (OpenVINO's
# default precision is bf16 on a CPU with native bf16, f32 elsewhere)
LOW_PRECISION = ("bf16", "openvino", "openvino_int8", "onnxruntime_int8")
INT8 = ("openvino_int8", "onnxruntime_int8")  # quantized: they need calibration images
DEPLOY_EXTRA = "pip install -e '.[deploy]'"  # the extra that brings OpenVINO and NNCF (make setup installs it)


class EngineMissing(UserError):
    """An engine whose package is not installed: the bench skips it with this one line."""


def missing(engine: str) -> str | None:
    """Why an engine cannot run here (its package is not installed), or None."""
    if not engine.startswith("openvino"):
        return None  # the others need only the core dependencies
    for package in ("openvino", *(("nncf",) if engine in INT8 else ())):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed: {DEPLOY_EXTRA}"
    return None


def openvino():
    try:
        import openvino as ov  # heavy, and optional: only the OpenVINO engines need it
    except ImportError:
        raise EngineMissing(f"OpenVINO is not installed: {DEPLOY_EXTRA}") from None
    return ov


def _openvino_runner(model: torch.nn.Module, engine: str, example: torch.Tensor, calibration) -> Callable:
    """The model converted by OpenVINO's own converter (any batch size), int8-quantized by NNCF on `calibration`
    images for openvino_int8, compiled for the CPU with fmnist's threads."""
    ov = openvino()
    if example.is_cuda:
        raise UserError("bench.engines: the OpenVINO engines run on the CPU only; drop them or set trainer.device=cpu")
    converted = ov.convert_model(model, example_input=example[:2], input=[ov.PartialShape([-1, *example.shape[1:]])])
    if engine in INT8:
        try:
            import nncf  # heavy, and optional: only the int8 engine needs it
        except ImportError:
            raise EngineMissing(f"NNCF is not installed: {DEPLOY_EXTRA}") from None
        logging.getLogger("nncf").setLevel(logging.WARNING)  # its progress bars would bury the benchmark's log
        images = [calibration[i : i + 1].numpy() for i in range(len(calibration))]  # one sample per image
        converted = nncf.quantize(converted, nncf.Dataset(images), subset_size=len(images))
    compiled = compile_openvino(converted, engine)
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def compile_openvino(model, engine: str):
    """An OpenVINO model compiled for the CPU with fmnist's threads, as the bench and the latency tables run it."""
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
    if engine == "openvino_f32":  # otherwise the CPU plugin's default: bf16 where the hardware computes it natively
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return openvino().Core().compile_model(model, "CPU", config)


def engine_runner(
    model: torch.nn.Module, engine: str, example: torch.Tensor, onnx_path: Path, calibration: torch.Tensor | None = None
) -> Callable:
    """A function images -> logits that runs `model` on one inference engine; built (and compiled, quantized on
    `calibration` images) before timing. An engine whose package is missing raises EngineMissing. The ONNX Runtime
    engines run the export at onnx_path, made if it is not there yet: its caller removes one of another model."""
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
    if engine.startswith("onnxruntime"):  # an inference-mode export: ONNX graph run by ONNX Runtime's CPU kernels
        import onnxruntime  # heavy, and optional: only for these engines

        if example.is_cuda:
            raise UserError(f"bench.engines: {engine} is timed on the CPU only; drop it or set trainer.device=cpu")
        if not onnx_path.exists():  # the other ONNX Runtime engine's export of this model (bench removes stale ones)
            _export_onnx(model, example, onnx_path)
        if engine in INT8:
            onnx_path = _onnxruntime_int8(onnx_path, calibration)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1  # same threads
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x.numpy()})[0]
    if engine == "bf16":  # eager under autocast: bf16 convs and matmuls on the fp32 weights, as bf16 training runs
        return lambda x: _bf16(model, x)
    if engine.startswith("openvino"):
        return _openvino_runner(model, engine, example, calibration)
    raise UserError(f"bench.engines: unknown engine {engine!r}; use some of {', '.join(ENGINES)}")


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, onnx_path: Path) -> None:
    for name in ("onnxscript", "onnx_ir"):  # their per-pass INFO lines would bury the benchmark's log
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.onnx.export(
        model,
        (example,),
        onnx_path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )


def _onnxruntime_int8(onnx_path: Path, calibration: torch.Tensor) -> Path:
    """ONNX Runtime's static post-training quantization of the exported graph, beside it: int8 weights per output
    channel, uint8 activations with ranges calibrated on `calibration` images (MinMax), in the QDQ format that ONNX
    Runtime fuses into its integer kernels."""
    # heavy, and needed only by this engine
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process  # the same: only for this engine

    class Images(CalibrationDataReader):  # one image per sample, as NNCF is fed for openvino_int8
        def __init__(self):
            self.images = (calibration[i : i + 1].numpy() for i in range(len(calibration)))

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"images": image}

    prepared, quantized = onnx_path.with_suffix(".prep.onnx"), onnx_path.with_suffix(".int8.onnx")
    quant_pre_process(str(onnx_path), str(prepared))  # shape inference and graph folding, as ONNX Runtime advises
    quantize_static(
        str(prepared),
        str(quantized),
        Images(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return quantized


def _bf16(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        return model(x).float()


def agreement(run: Callable, reference: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
    """How a low-precision engine's predictions compare with the fp32 model's on (x, y): the share of images whose
    argmax agrees, both accuracies, and the largest logit difference."""
    agree = correct = ref_correct = 0
    diff = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            logits, ref = torch.as_tensor(run(x[i : i + batch_size])).to(x.device), reference(x[i : i + batch_size])
            agree += (logits.argmax(1) == ref.argmax(1)).sum().item()
            correct += (logits.argmax(1) == y[i : i + batch_size]).sum().item()
            ref_correct += (ref.argmax(1) == y[i : i + batch_size]).sum().item()
            diff = max(diff, (logits - ref).abs().max().item())
    n = len(x)
    return {
        "argmax_agreement": agree / n,
        "test_accuracy": correct / n,
        "fp32_test_accuracy": ref_correct / n,
        "accuracy_drop": (ref_correct - correct) / n,
        "max_abs_logit_diff": diff,
    }


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
    for layer in model.layers:
        model.step(layer, h)
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = model.step(layer, h)
        times[layer.name] = 1000 * (time.perf_counter() - t0) / repeats
        h = out
    return times


def check_bench(b: DictConfig) -> None:
    integer(b.images, "bench.images", 1, 60_000)
    integer(b.batch_size, "bench.batch_size")
    integer(b.repeats, "bench.repeats")
    integer(b.max_repeats, "bench.max_repeats", b.repeats)
    number(b.halfwidth, "bench.halfwidth", 0, 1, low_open=True)
    integer(b.warmup, "bench.warmup", 0)
    engines = list(b.engines) if isinstance(b.engines, ListConfig | list) else None
    if not engines or any(e not in ENGINES for e in engines):
        raise ConfigError(f"bench.engines={b.engines}: give a list of one or more of {', '.join(ENGINES)}")
    number(b.min_agreement, "bench.min_agreement", 0, 1)
    number(b.min_agreement_int8, "bench.min_agreement_int8", 0, 1)
    number(b.max_accuracy_drop, "bench.max_accuracy_drop", 0, 1)
    integer(b.calibration, "bench.calibration", 1, 60_000, " (images of the 60 000 training images)")
    one_of(b.floor, "bench.floor", (True, False))
    one_of(b.emulated, "bench.emulated", (True, False))
    if b.deploy is not None and b.deploy not in b.engines:
        raise ConfigError(
            f"bench.deploy={b.deploy}: name one of bench.engines {list(b.engines)}, or null (the fastest)"
        )
    if (b.original is None) != (b.pruned is None):
        raise ConfigError("bench.original and bench.pruned go together: give both checkpoints, or bench.prune_dir")
