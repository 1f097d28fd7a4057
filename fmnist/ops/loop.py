"""Training mechanics shared by every stage: the model and optimizer from config, the epoch loop, evaluation,
fine-tuning."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from fmnist.core.precision import autocast, scaler


def build_model(model_cfg: DictConfig):
    """The model from its (validated) config group."""
    return instantiate(model_cfg)


def build_optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module, **overrides):
    """The optimizer group is a partial (`_partial_: true`): it gets the parameters here."""
    return instantiate(optimizer_cfg, **overrides)(params=model.parameters())


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             precision: str = "fp32") -> tuple[float, float]:  # fmt: skip
    """Mean cross-entropy and accuracy (fraction) over a whole split."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        with autocast(precision, x.device):
            logits = model(x[i : i + batch_size])
            loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(x), correct.item() / len(x)


def train_epoch(model, optimizer, x, y, batch_size: int, generator: torch.Generator, progress=None,
                precision: str = "fp32", grad_scaler=None):  # fmt: skip
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
        optimizer.zero_grad(set_to_none=True)
        if grad_scaler:  # fp16: scaled so small gradients do not underflow
            grad_scaler.scale(loss).backward()
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # accumulate on the device: no host sync per batch
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def finetune(model, optimizer_cfg: DictConfig, data, batch_size: int, epochs: float, generator: torch.Generator,
             lr: float | None = None, precision: str = "fp32") -> None:  # fmt: skip
    """`epochs` SGD passes over the training split; a fraction trains on that share of it, drawn at random."""
    optimizer = build_optimizer(optimizer_cfg, model, **({"lr": lr} if lr else {}))
    x, y = data.train_x, data.train_y
    grad_scaler = scaler(precision, x.device)  # one for all passes: it learns its scale as it goes
    while epochs > 0:
        idx = torch.randperm(len(x), generator=generator)[: round(min(epochs, 1) * len(x))].to(x.device)
        train_epoch(model, optimizer, x[idx], y[idx], batch_size, generator, precision=precision,
                    grad_scaler=grad_scaler)  # fmt: skip
        epochs -= 1


def progress_bar(setting, epoch: int):
    """A tqdm wrapper over batches (trainer.progress: auto = only on a terminal), or None."""
    show = sys.stderr.isatty() if setting == "auto" else setting
    if not show:
        return None
    return lambda it: tqdm(it, desc=f"epoch {epoch}", unit="batch", leave=False)
