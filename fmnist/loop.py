"""Training mechanics shared by every stage: device choice, the epoch loop, evaluation, fine-tuning."""

from __future__ import annotations

import ctypes
import sys

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from fmnist.errors import UserError

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")


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
            raise UserError(f"trainer.device={name} but {torch.cuda.device_count()} CUDA GPUs are visible: "
                            "use trainer.device=auto or cpu")  # fmt: skip
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
    AVX-512 EPYC: eager inference over 60 000 images, medium 4.7 -> 2.7 s (README: The allocator).
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


def build_model(model_cfg: DictConfig):
    """The model from its (validated) config group."""
    return instantiate(model_cfg)


def build_optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module, **overrides):
    """The optimizer group is a partial (`_partial_: true`): it gets the parameters here."""
    return instantiate(optimizer_cfg, **overrides)(params=model.parameters())


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) over a whole split."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(x), correct.item() / len(x)


def train_epoch(model, optimizer, x, y, batch_size: int, generator: torch.Generator, progress=None):
    """One pass over shuffled index slices of the preloaded tensors: (mean loss, accuracy) seen while training."""
    model.train()
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    starts = range(0, len(x), batch_size)
    for i in progress(starts) if progress else starts:
        idx = perm[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # accumulate on the device: no host sync per batch
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def finetune(model, optimizer_cfg: DictConfig, data, batch_size: int, epochs: float, generator: torch.Generator,
             lr: float | None = None) -> None:  # fmt: skip
    """`epochs` SGD passes over the training split; a fraction trains on that share of it, drawn at random."""
    optimizer = build_optimizer(optimizer_cfg, model, **({"lr": lr} if lr else {}))
    x, y = data.train_x, data.train_y
    while epochs > 0:
        idx = torch.randperm(len(x), generator=generator)[: round(min(epochs, 1) * len(x))].to(x.device)
        train_epoch(model, optimizer, x[idx], y[idx], batch_size, generator)
        epochs -= 1


def progress_bar(setting, epoch: int):
    """A tqdm wrapper over batches (trainer.progress: auto = only on a terminal), or None."""
    show = sys.stderr.isatty() if setting == "auto" else setting
    if not show:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=f"epoch {epoch}", unit="batch", leave=False)
