"""Which arithmetic a run computes in (trainer.precision), and the autocast context each step uses.

Weights, optimizer state and checkpoints stay fp32 in every precision; only each step's forward pass and loss run
under `torch.autocast`. Never one autocast context around a whole epoch: autocast caches the low-precision copies of
the weights for as long as its context lives, so the forward pass would never see the optimizer's updates and the
model would stop learning (tests/test_precision.py trains under bf16 and checks the loss falls).

`auto` is a rule, pinned by the tests: bf16 on a CUDA GPU that supports it, and on a CPU with native bf16 (AMX or
AVX512-BF16: a training step of medium 2.7x faster in bf16 on such a Xeon); fp32 everywhere else, since on a CPU
without them autocast emulates bf16 and is slower.
"""

from __future__ import annotations

import contextlib

import torch

from fmnist.core.errors import UserError
from fmnist.core.machine import cpu_flags

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 in hardware


def resolve(name: str, device: torch.device, flags: set[str] | None = None) -> dict:
    """{requested, used (fp32 | bf16 | fp16), why} for trainer.precision on `device`, as summaries record it; a
    UserError where it cannot run there."""
    used, why = _choose(name, device, flags)
    return {"requested": name, "used": used, "why": why}


def _choose(name: str, device: torch.device, flags: set[str] | None) -> tuple[str, str]:
    if name == "fp16" and device.type != "cuda":
        raise UserError(f"trainer.precision=fp16 needs a CUDA GPU (its gradient scaler); on {device.type} use bf16, "
                        "fp32 or auto")  # fmt: skip
    if name in ("bf16", "auto") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if name == "bf16":
            raise UserError("trainer.precision=bf16 but this GPU has no bf16: use fp16, fp32 or auto")
        return "fp32", "auto: this GPU has no bf16"
    if name == "bf16" and device.type == "mps":
        raise UserError("trainer.precision=bf16 is not supported on mps here: use fp32 or auto")
    if name != "auto":
        return name, "asked for"
    if device.type == "cuda":
        return "bf16", "auto: a CUDA GPU with bf16"
    if device.type == "cpu":
        native = sorted(set(NATIVE_BF16) & (cpu_flags() if flags is None else flags))
        if native:
            return "bf16", f"auto: the CPU computes bf16 natively ({', '.join(native)})"
        return (
            "fp32",
            "auto: the CPU has no native bf16 (no amx_bf16 or avx512_bf16), where bf16 is emulated and slower",
        )
    return "fp32", f"auto: fp32 on {device.type}"


def autocast(precision: str, device: torch.device):
    """The context for one step's forward pass and loss: autocast to bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's gradient scaler (its small exponent range underflows small gradients); None for fp32 and bf16."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
