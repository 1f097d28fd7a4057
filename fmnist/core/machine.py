"""This process's machine: which torch device, how many CPU threads, glibc's heap, and the CPU's name (what a timing
depends on, so latency tables and benches record it)."""

from __future__ import annotations

import ctypes
import os
import platform
import socket
from pathlib import Path

import torch
from omegaconf import DictConfig

from fmnist.core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """trainer.device (validated: auto, cpu, cuda, cuda:N or mps) as a torch device that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"trainer.device={name} but {torch.cuda.device_count()} CUDA GPUs are visible: "
                "use trainer.device=auto or cpu"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device=mps but MPS is not available here: use trainer.device=auto or cpu")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_heap = {"kept": False}


def keep_heap() -> bool:
    """Have glibc keep freed memory on the heap. By default it gives every allocation above its mmap threshold
    (128 KB, rising to at most 32 MB) a fresh mapping and unmaps it on free, so each eager CPU call page-faults its
    activations in anew (a batch of 1000 through medium: conv1's output alone is 32 MB). High mmap and trim thresholds
    do what jemalloc or tcmalloc would (PyTorch's CPU performance guide). Measured by fmnist.bench on the 2-core
    AVX-512 EPYC: eager inference over 60 000 images, medium 4.7 -> 2.7 s (docs/benchmarks.md: the allocator).
    Returns whether it applies: glibc only, once per process (the heap then grows to the peak and stays)."""
    if not _heap["kept"]:
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            _heap["kept"] = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 1 << 30))
        except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator as it is
            pass
    return _heap["kept"]


def heap_kept() -> bool:
    return _heap["kept"]


def cpu_runtime(trainer: DictConfig) -> None:
    """This process's CPU settings from the trainer group: torch threads and, with trainer.malloc_heap, keep_heap."""
    set_threads(trainer.threads)
    if trainer.malloc_heap:
        keep_heap()


CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (Linux: "model name", "cpu family", "model", "flags", ...); empty
    where it is missing."""
    try:
        block = CPUINFO.read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    fields = (line.partition(":") for line in block.splitlines())
    return {key.strip(): value.strip() for key, colon, value in fields if colon}


def cpu_name() -> str:
    """The CPU's model name; where a VM hides the model number ("AMD EPYC" names Zen 1 to Zen 4), its x86 family and
    model too, so timings from different generations are not filed under one name."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    family, model = info.get("cpu family"), info.get("model")
    if family and model and not any(ch.isdigit() for ch in name):
        name = f"{name} (family {family} model {model})"
    return name


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512_bf16, amx_bf16, ...); empty where /proc/cpuinfo is missing."""
    return set(_cpuinfo().get("flags", "").split())


HOST_ENV = "FMNIST_HOST"  # overrides the host name in worker ids and run-folder claims: e.g. containers sharing one


def host() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()
