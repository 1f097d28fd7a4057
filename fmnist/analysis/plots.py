"""Every plot fmnist draws: accuracy and loss vs epoch of runs that differ in one hyperparameter (`compare`, the CLI
`python -m fmnist.plots compare DIR --by KEY`), a pruning trajectory, the accuracy-vs-speed frontier, a sweep's curves.

DIR is any folder holding runs (a sweep, or a Hydra basic-sweeper multirun such as
`python -m fmnist.train --multirun ~hparams_search optimizer.lr=0.1,0.01,0.001`). Each run's `metrics.csv`
gives the curves and its `.hydra/config.yaml` the value of the hyperparameter; the PNG goes to DIR/plots/.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from fmnist.core import runs as run_files
from fmnist.core.errors import UserError
from fmnist.core.study import search_space


def keys() -> list[str]:
    """The hyperparameters a comparison can be coloured by: the study's searched keys and the epoch budget."""
    return [*search_space(), "trainer.max_epochs"]


def find_runs(root: Path) -> list[dict]:
    """Every run folder below root (it has .hydra/config.yaml): its config, metric rows, status and the option
    chosen for each config group (Hydra's runtime.choices: `model` -> `large`)."""
    found = []
    for cfg_file in sorted(root.rglob(".hydra/config.yaml")):
        run_dir = cfg_file.parent.parent
        rows = []
        if (run_dir / "metrics.csv").exists():
            rows = [{k: float(v) for k, v in r.items()} for r in run_files.read_csv(run_dir / "metrics.csv")]
        summary = run_files.summary_of(run_dir, "train") or {}
        hydra_file = cfg_file.parent / "hydra.yaml"
        choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.exists() else {}
        found.append(
            {
                "dir": run_dir,
                "cfg": OmegaConf.load(cfg_file),
                "rows": rows,
                "status": summary.get("status", "unfinished"),
                "groups": dict(choices),
            }
        )
    return found


def value_of(run: dict, key: str):
    """A dotted config value, or the option chosen for a config group (`model` -> `large`)."""
    if key in run["groups"]:
        return run["groups"][key]
    return OmegaConf.select(run["cfg"], key, default=None)


def sort_key(value):
    return (isinstance(value, str), value)


def compare(root: str | Path, by: str, out: str | Path | None = None) -> Path:
    """One PNG: accuracy (left) and loss (right) vs epoch, train dashed and validation solid, coloured by `by`."""
    plt = _pyplot()
    root = Path(root)
    runs = [r for r in find_runs(root) if value_of(r, by) is not None]
    if not runs:
        raise UserError(f"no runs with a value for {by} under {root}: give a sweep or multirun folder")
    values = sorted({value_of(r, by) for r in runs}, key=sort_key)
    others = [k for k in keys() if k != by and len({str(value_of(r, k)) for r in runs}) > 1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, value in enumerate(values):
        color = colors[i % len(colors)]
        group = [r for r in runs if value_of(r, by) == value]
        curves = [r for r in group if r["rows"]]
        label = f"{by.split('.')[-1]}={value}"
        if len(group) > 1:
            label += f" ({len(group)} runs)"
        lost = [r["status"] for r in group if r["status"] != "completed"]
        if lost:
            label += f" [{len(lost)} {'/'.join(sorted(set(lost)))}]"
        for j, run in enumerate(curves or [None]):
            if run is None:  # diverged before its first epoch: no curve, but keep it in the legend
                ax_acc.plot([], [], color=color, label=label)
                continue
            epochs = [r["epoch"] for r in run["rows"]]
            alpha = 1.0 if len(curves) == 1 else 0.6
            val = [100 * r["val_accuracy"] for r in run["rows"]]
            ax_acc.plot(epochs, val, color=color, alpha=alpha, marker="o", ms=3, label=label if j == 0 else None)
            ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in run["rows"]], color=color, ls="--", alpha=alpha)
            ax_loss.plot(epochs, [r["val_loss"] for r in run["rows"]], color=color, alpha=alpha)
            ax_loss.plot(epochs, [r["train_loss"] for r in run["rows"]], color=color, ls="--", alpha=alpha)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy: validation solid, train dashed")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss: validation solid, train dashed")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    note = f"; other settings also vary: {', '.join(k.split('.')[-1] for k in others)}" if others else ""
    fig.suptitle(f"{by}: {len(runs)} runs from {root.name}{note}", fontsize=10)
    fig.tight_layout()
    out = Path(out) if out else root / "plots" / f"compare_{by.replace('.', '_')}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def pruning_plots(rows: list[dict], out_dir: Path) -> list[Path]:
    """The pruning trajectory: accuracy vs step coloured by layer, and accuracy vs the study's FLOPs."""
    plt = _pyplot()
    colors = {"": "black", "conv1": "tab:blue", "conv2": "tab:orange", "fc1": "tab:green", "final": "tab:red"}
    paths = []
    views = [
        ("prune_accuracy_vs_step.png", "step", "pruning step"),
        ("prune_accuracy_vs_flops.png", "study_flops", "FLOPs per image (study's formula)"),
    ]
    if all(r.get("predicted_ms") not in ("", None) for r in rows):  # a latency table was at hand
        views.append(("prune_accuracy_vs_time.png", "predicted_ms", "predicted ms per batch (latency table)"))
    for name, x_key, x_label in views:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for layer, color in colors.items():
            pts = [r for r in rows if r["layer"] == layer]
            if not pts:
                continue
            kept = [r for r in pts if r["status"] != "reverted"]
            for metric, style in (("val_accuracy", "-o"), ("test_accuracy", "--s")):
                ax.plot(
                    [r[x_key] for r in kept],
                    [100 * r[metric] for r in kept],
                    style,
                    color=color,
                    ms=3,
                    label=f"{layer or 'unpruned'} {metric.split('_')[0]}",
                )
            for r in pts:
                if r["status"] == "reverted":
                    ax.plot(r[x_key], 100 * r["val_accuracy"], "x", color=color, ms=8)
        final = [r for r in rows if r["status"] in ("start", "kept", "finetuned")][-1]
        arch = f"({final['conv1_channels']}, {final['conv2_channels']}, {final['fc1_size']})"
        ax.set(
            xlabel=x_label,
            ylabel="accuracy (%)",
            title=f"norm pruning -> (c1, c2, f1) = {arch}; x = reverted step (beyond tolerance)",
        )
        if x_key in ("study_flops", "predicted_ms"):
            ax.set_xscale("log")
            ax.invert_xaxis()  # pruning goes right
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def speed_frontier(runs_: list[dict], study: tuple[float, float], out: Path) -> Path:
    """Test accuracy vs speedup over the unpruned model, one line per prune run along its trajectory (predicted by
    the latency table), its measured end point (fmnist.bench, each model on its fastest engine) as a star, and the
    study's point: FLOPs-driven and latency-driven pruning side by side."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, run in enumerate(runs_):
        color = f"C{i}"
        ax.plot(run["speedups"], [100 * t for t in run["tests"]], "-o", ms=2, color=color, label=run["name"])
        if run.get("measured"):
            ax.plot(run["measured"], 100 * run["tests"][-1], "*", ms=14, color=color)
    ax.plot(study[0], 100 * study[1], "kD", ms=8, label=f"study (1, 7, 72): ~{study[0]:g}x, {100 * study[1]:.2f} %")
    ax.set(
        xlabel="speedup over the unpruned model (lines: predicted by the latency table; stars: measured)",
        ylabel="test accuracy (%)",
        title="Accuracy vs speed of pruned models",
    )
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def sweep_curves(rows: list[dict], out: Path, title: str) -> Path:
    """Validation accuracy vs epoch of every trial of a sweep, coloured by how it ended: pruned trials are the curves
    cut at a rung (successive halving's picture), completed ones run to max_epochs."""
    plt = _pyplot()
    colors = {"COMPLETE": "tab:green", "PRUNED": "tab:orange", "DIVERGED": "tab:red", "FAIL": "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 5))
    labelled = set()
    for row in sorted(rows, key=lambda r: r["state"] == "COMPLETE"):  # completed curves drawn last, on top
        path = Path(row["run_dir"]) / "metrics.csv" if row["run_dir"] else None
        if not path or not path.exists():
            continue
        metrics = run_files.read_csv(path)
        state = row["state"]
        label = None if state in labelled else f"{state.lower()} ({sum(r['state'] == state for r in rows)})"
        labelled.add(state)
        ax.plot(
            [int(m["epoch"]) for m in metrics],
            [100 * float(m["val_accuracy"]) for m in metrics],
            color=colors[state],
            alpha=0.8 if state == "COMPLETE" else 0.5,
            lw=1.2,
            marker=".",
            ms=3,
            label=label,
        )
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"sweep {title}: every trial, cut where it stopped")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], 60))  # diverged trials sit at 10 %: keep the learning curves readable
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _pyplot():
    import matplotlib  # heavy: imported only when a plot is drawn

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend when imported

    return plt
