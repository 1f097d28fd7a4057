"""Training mechanics shared by every stage: the model and optimizer from config, the epoch loop, evaluation,
fine-tuning."""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from fmnist.core import runs
from fmnist.core.machine import cpu_name, heap_kept
from fmnist.core.model import CLASSES, SIDE
from fmnist.core.precision import autocast, scaler


def build_model(model_cfg: DictConfig):
    """The model from its (validated) config group."""
    return instantiate(model_cfg)


def build_optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module, **overrides):
    """The optimizer group is a partial (`_partial_: true`): it gets the parameters here."""
    return instantiate(optimizer_cfg, **overrides)(params=model.parameters())


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, precision: str = "fp32"
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) over a whole split."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        with autocast(precision, x.device):
            logits = model(x[i : i + batch_size])
            loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(x), correct.item() / len(x)


def backward_step(optimizer, loss: torch.Tensor, grad_scaler=None) -> None:
    """Fresh gradients of `loss`, then one optimizer step; with fp16's scaler, scaled so small gradients do not
    underflow."""
    optimizer.zero_grad(set_to_none=True)
    if grad_scaler:
        grad_scaler.scale(loss).backward()
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_epoch(
    model,
    optimizer,
    x,
    y,
    batch_size: int,
    generator: torch.Generator,
    progress=None,
    precision: str = "fp32",
    grad_scaler=None,
):
    """One pass over shuffled index slices of the preloaded tensors: (mean loss, accuracy) seen while training.
    In bf16/fp16 each step's forward and loss run under their own autocast (precision.py says why per step)."""
    model.train()
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    starts = range(0, len(x), batch_size)
    for i in progress(starts) if progress else starts:
        idx = perm[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        with autocast(precision, x.device):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
        backward_step(optimizer, loss, grad_scaler)
        # accumulate on the device: no host sync per batch
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def finetune(
    model,
    optimizer_cfg: DictConfig,
    data,
    batch_size: int,
    epochs: float,
    generator: torch.Generator,
    lr: float | None = None,
    precision: str = "fp32",
    after_pass=None,
) -> None:
    """`epochs` SGD passes over the training split, one optimizer throughout; a fraction trains on that share of it,
    drawn at random. `after_pass()`, if given, is called after each pass."""
    optimizer = build_optimizer(optimizer_cfg, model, **({"lr": lr} if lr else {}))
    x, y = data.train_x, data.train_y
    grad_scaler = scaler(precision, x.device)  # one for all passes: it learns its scale as it goes
    while epochs > 0:
        idx = torch.randperm(len(x), generator=generator)[: round(min(epochs, 1) * len(x))].to(x.device)
        train_epoch(
            model, optimizer, x[idx], y[idx], batch_size, generator, precision=precision, grad_scaler=grad_scaler
        )
        if after_pass:
            after_pass()
        epochs -= 1


def progress_bar(setting, epoch: int):
    """A tqdm wrapper over batches (trainer.progress: auto = only on a terminal), or None."""
    show = sys.stderr.isatty() if setting == "auto" else setting
    if not show:
        return None
    return lambda it: tqdm(it, desc=f"epoch {epoch}", unit="batch", leave=False)


def step_times(
    model: torch.nn.Module,
    optimizer_cfg: DictConfig,
    batch_size: int,
    device: torch.device,
    cache_dir: Path,
    rounds: int = 7,
    steps: int = 3,
) -> dict[str, float]:
    """Milliseconds of one training step of a copy of this model (forward, loss, backward, SGD step) on a random
    batch, in fp32 and in bf16: the median over interleaved rounds after a warm-up, which is what trainer.precision=auto
    decides by on a CPU with native bf16. Cached in cache_dir per CPU, torch version, threads, architecture and
    batch size, so a machine times each model once (about a second for medium) and every later run agrees."""
    model = copy.deepcopy(model).to(device)
    meta = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "malloc_heap": heap_kept(),
        "arch": model.arch,
        "batch_size": batch_size,
    }
    path = Path(cache_dir) / f"step-{hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("machine") == meta:
            return cached["step_ms"]
    with torch.random.fork_rng(devices=[]):  # the run's seeded init and batch order must not see this
        torch.manual_seed(0)
        x = torch.randn(batch_size, 1, SIDE, SIDE, device=device)
        y = torch.randint(0, CLASSES, (batch_size,), device=device)
        optimizer = build_optimizer(optimizer_cfg, model, lr=1e-4)  # small steps: the weights stay ordinary floats

        def step(precision: str) -> None:
            with autocast(precision, device):
                loss = F.cross_entropy(model(x), y)
            backward_step(optimizer, loss)

        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for precision in times:
            for _ in range(steps):  # warm-up: oneDNN picks and builds its kernels per dtype on the first calls
                step(precision)
        for _ in range(rounds):  # interleaved, so a busy moment of the machine hits both alike
            for precision, seconds in times.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(precision)
                seconds.append((time.perf_counter() - t0) / steps)
    ms = {precision: 1000 * statistics.median(seconds) for precision, seconds in times.items()}
    runs.write_json({"machine": meta, "step_ms": ms}, path)
    return ms
