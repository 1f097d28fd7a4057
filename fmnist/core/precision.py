"""Which arithmetic a run computes in (trainer.precision), and the autocast context each step uses.

Weights, optimizer state and checkpoints stay fp32 in every precision; only each step's forward pass and loss run
under `torch.autocast`. Never one autocast context around a whole epoch: autocast caches the low-precision copies of
the weights for as long as its context lives, so the forward pass would never see the optimizer's updates and the
model would stop learning (tests/test_precision.py trains under bf16 and checks the loss falls).

`auto` is a rule where the answer is known and a measurement where it is not, pinned by the tests:
- a CUDA GPU with bf16: bf16;
- a CPU without native bf16 (no `amx_bf16` or `avx512_bf16` flag): fp32, since autocast emulates bf16 there and is
  slower;
- a CPU with native bf16: whichever of fp32 and bf16 runs the model's own training step faster, timed at first use
  (`timing`, fmnist/training/loop.py: step_times, cached per machine). A flag is not enough: on a Xeon with AMX a medium
  step ran 2.7x faster in bf16, but on one with AVX512-BF16 and no AMX it ran 1.2x slower (docs/training.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from fmnist.core.errors import UserError
from fmnist.core.machine import cpu_flags

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 in hardware
MIN_GAIN = 1.1  # auto takes bf16 on such a CPU only if a step is at least this much faster: timings are noisy


def resolve(
    name: str, device: torch.device, flags: set[str] | None = None, timing: Callable[[], dict] | None = None
) -> dict:
    """{requested, used (fp32 | bf16 | fp16), why[, step_ms]} for trainer.precision on `device`, as summaries record
    it; a UserError where it cannot run there. `timing() -> {"fp32": ms, "bf16": ms}` times one training step in
    each; it is called only where auto must measure (a CPU with native bf16). Without it auto stays at fp32 there."""
    used, why = _choose(name, device, flags)
    if used != "measure":
        return {"requested": name, "used": used, "why": why}
    if timing is None:
        return {"requested": name, "used": "fp32", "why": f"{why}, not timed here: fp32"}
    ms = timing()
    gain = ms["fp32"] / ms["bf16"]
    used = "bf16" if gain >= MIN_GAIN else "fp32"
    why = (
        f"{why}; a training step timed {ms['fp32']:.1f} ms in fp32, {ms['bf16']:.1f} ms in bf16 "
        f"({gain:.2f}x; bf16 from {MIN_GAIN}x): {used}"
    )
    return {"requested": name, "used": used, "why": why, "step_ms": ms}


def native_bf16(flags: set[str]) -> list[str]:
    """The CPU flags among `flags` that say it computes bf16 in hardware; none: autocast emulates bf16, slower."""
    return sorted(set(NATIVE_BF16) & flags)


def _choose(name: str, device: torch.device, flags: set[str] | None) -> tuple[str, str]:
    if name == "fp16" and device.type != "cuda":
        raise UserError(
            f"trainer.precision=fp16 needs a CUDA GPU (its gradient scaler); on {device.type} use bf16, fp32 or auto"
        )
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
        native = native_bf16(cpu_flags() if flags is None else flags)
        if native:
            return "measure", f"auto: the CPU computes bf16 natively ({', '.join(native)})"
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
