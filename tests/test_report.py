"""The report over a tiny real pipeline: training, sweep, one-factor comparison, prune, bench."""

import csv
import json
import re

import pytest

from fmnist.core import runs
from fmnist.prune import prune
from fmnist.report import _prune_over_seeds, run_name
from fmnist.report import main as report_main
from fmnist.training.run import train
from tests.helpers import TINY, run_cli, small_cfg, sweep_cmd


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("outputs")
    train(small_cfg(root / "runs" / "basic", "data.subset=3000", "data.val_size=500"))
    run_cli(*sweep_cmd(root / "sweeps" / "s", "hydra.sweeper.n_trials=2", "optimizer.lr=0.01,0.001"))
    run_cli(
        "fmnist.train",
        "--multirun",
        "~hparams_search",
        *TINY,
        "optimizer.momentum=0.9,0.99",
        "trainer.seed=0,1",
        f"hydra.sweep.dir={root / 'compare_momentum'}",
    )
    run_cli(
        "fmnist.train",
        "--multirun",
        "~hparams_search",
        *TINY,
        "trainer.seed=0,1",
        f"hydra.sweep.dir={root / 'medium_seeds'}",
    )
    for name, seed in (("p", 42), ("p_seed1", 1)):  # the same method over two seeds
        prune(
            small_cfg(
                root / "prune" / name,
                f"prune.checkpoint={root / 'sweeps' / 's' / 'best.json'}",
                "prune.layers=[fc1]",
                "prune.step=25",
                "prune.tolerance=1",
                "data.subset=3000",
                "data.val_size=500",
                f"trainer.seed={seed}",
                config_name="prune",
            )
        )
    run_cli(
        "fmnist.bench",
        f"paths.log_dir={root}",
        "bench.images=2000",
        "bench.repeats=2",
        "bench.max_repeats=2",
        "trainer.threads=1",
        "bench.engines=[eager,onnxruntime]",
        f"hydra.run.dir={root / 'bench' / 'b'}",
    )
    return root


def test_report_has_every_section_with_numbers_from_the_files(outputs):
    report_main(["--root", str(outputs), "--out", str(outputs / "report")])
    md = (outputs / "report" / "report.md").read_text()
    assert md.count("_Missing") == 1 and "_Missing: no top configurations retrained over seeds" in md
    # the basic model over seeds (a multirun of one configuration): mean ± std [interval] (n) of the runs' own figures
    tests = [
        json.loads((outputs / "medium_seeds" / str(i) / "summary.json").read_text())["best"]["test_accuracy"]
        for i in (0, 1)
    ]
    assert "| fmnist, over seeds | " in md and f"| {100 * sum(tests) / 2:.2f} ± " in md and "(n=2) |" in md
    assert "| study (one run) | 91.14 | 89.32 |" in md
    # one run named instead: its own figures
    report_main(["--root", str(outputs), "--basic", str(outputs / "runs" / "basic"), "--out", str(outputs / "r1")])
    basic = json.loads((outputs / "runs" / "basic" / "summary.json").read_text())["best"]
    assert (
        f"| fmnist (best-validation epoch) | {100 * basic['train_accuracy']:.2f} | {100 * basic['test_accuracy']:.2f} |"
        in (outputs / "r1" / "report.md").read_text()
    )
    with open(outputs / "sweeps" / "s" / "summary.csv") as f:
        top = next(csv.DictReader(f))
    assert f"fmnist #1 (trial {top['trial']})" in md and f"{100 * float(top['val_accuracy']):.2f}" in md
    assert "| study #1 | study #2 | study #3 |" in md and "| 90.10 | 90.01 | 89.97 |" in md  # the study's top three
    # the comparison's runs grouped by all but the seed, and the study's sentence judged on them
    assert "| optimizer.momentum=0.9 | 0,1 |" in md and "| optimizer.momentum=0.99 | 0,1 |" in md
    assert re.search(
        r"\| momentum 0.99 does about as well as 0.9 \| momentum 0.99 − momentum 0.9 [+-]\d+\.\d\d points "
        r"\[[^]]+\] \(n=2\).* \| \*\*(holds|does not hold|not settled)\*\* \|",
        md,
    )
    # the search's own findings: importances of what varied among its completed trials
    assert "| optimizer.lr | 1.000 |" in md
    after = json.loads((outputs / "prune" / "p" / "summary.json").read_text())["after"]
    assert f"| (12, 16, 25) | 3,203,520 → {after['study_flops']:,} |" in md
    assert "| study | norm, no fine-tuning | (1, 7, 72) | 3,203,520 → 343,712 | 9.32x | - | 87.62 |" in md
    # the two seeds of one method grouped: mean [interval] (n=2) of their own test accuracies
    tests = [
        json.loads((outputs / "prune" / n / "summary.json").read_text())["after"]["test_accuracy"]
        for n in ("p", "p_seed1")
    ]
    assert "### Over fine-tuning seeds" in md and "| 1, 42 | (12, 16, 25) | " in md
    assert f"| {100 * sum(tests) / 2:.2f} ± " in md.split("### Over fine-tuning seeds")[1]
    bench = json.loads((outputs / "bench" / "b" / "summary.json").read_text())
    # two rounds: each speedup with its interval over them
    cell = {
        e: f"{i['ratio']:.2f}x [{i['low']:.2f}, {i['high']:.2f}] (n=2)" for e, i in bench["speedup_interval"].items()
    }
    assert f"| {cell['fastest']} | {cell['eager']} | {bench['flops_ratio']:.2f}x | ~11x |" in md
    # the decomposition row ends with the ceiling the floor network sets: pruning on the deployment engine / total
    c = bench["decomposition"]["ceiling"]
    ceiling = " / ".join(
        f"{c[k]['ratio']:.2f}x [{c[k]['low']:.2f}, {c[k]['high']:.2f}] (n=2)" for k in ("pruning", "total")
    )
    assert f"| {ceiling} ({c['engine']}) |" in md
    html = (outputs / "report" / "report.html").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(images) == 8  # sweep curves, one comparison, importances, slice, two pruning plots per prune run
    # linked beside report.md, not into outputs/: the folder reads the same wherever it is copied
    assert all(i.startswith("images/") and (outputs / "report" / i).is_file() for i in images)
    assert len(set(images)) == len(images) == len(list((outputs / "report" / "images").iterdir()))
    assert html.count("data:image/png;base64,iVBORw0KGgo") == len(images)  # embedded PNGs, not links
    assert "<table>" in html


def test_missing_inputs_are_named_not_a_crash(tmp_path):
    report_main(["--root", str(tmp_path), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report" / "report.md").read_text()
    for what in ("medium preset", "no sweep", "no one-factor multirun", "no prune run", "no bench run"):
        assert f"_Missing: {what}" in md or f"_Missing: no completed training run of the {what}" in md
    assert "python -m fmnist.prune" in md and (tmp_path / "report" / "report.html").exists()


def test_latency_aware_and_flops_aware_selection_compared_seed_by_seed(tmp_path):
    # prune summaries as fmnist.prune writes them: two selections at one budget, three seeds each
    dirs = []
    for cost, base in (("latency", 0.880), ("flops", 0.870)):
        for seed in range(3):
            prune_cfg = {
                "criterion": "l2",
                "selection": "global",
                "cost": cost,
                "min_saving": None,
                "target_flops_ratio": None,
                "target_speedup": 6,
            }
            arch = {"conv1_channels": 2, "conv2_channels": 6, "fc1_size": 30}
            summary = {
                "source_checkpoint": "/ckpt/best.pt",
                "prune": prune_cfg,
                "seed": seed,
                "after": {"test_accuracy": base + 0.002 * seed + 0.001 * (cost == "latency") * seed, "arch": arch},
                "flops_ratio": 9.0,
                "predicted_speedup": 6.1,
                "measured": {"speedup": 5.5 + 0.1 * seed},
            }
            dirs.append(tmp_path / f"{cost}{seed}")
            runs.write_summary("prune", summary, dirs[-1])
    md = _prune_over_seeds(dirs)
    # latency - flops per seed: +0.010, +0.011, +0.012 -> mean +1.10 points, t interval over 3 differences
    assert "test accuracy, latency-aware minus FLOPs-aware, +1.10 points [+0.85, +1.35] (n=3)" in md
    # latency: 88.00, 88.30, 88.60 %: mean 88.30, std 0.30, t(2) = 4.303 -> ±0.75; speedups 5.5, 5.6, 5.7 -> ±0.25
    row = "| by latency | 88.30 ± 0.30 [87.55, 89.05] (n=3) | 6.10x [6.10, 6.10] (n=3) | 5.60x [5.35, 5.85] (n=3) |"
    assert row in md


def test_a_multiruns_numbered_jobs_are_named_with_their_multirun(tmp_path):
    assert run_name(tmp_path / "prune_norm_finetune" / "0") == "prune_norm_finetune/0"  # not a bare, ambiguous "0"
    assert run_name(tmp_path / "prune" / "p_seed1") == "p_seed1"


def test_the_findings_at_the_study_budget_sit_beside_the_comparisons(outputs, tmp_path, monkeypatch):
    import fmnist.findings as command
    from tests.test_findings import _findings_cfg, _run

    # a findings results folder as `python -m fmnist.findings` writes it, from finished runs of two momentum values
    for seed in range(3):
        _run(tmp_path / "out" / "base" / f"seed{seed}", seed, 0.85 + 0.01 * seed)
        _run(tmp_path / "out" / "optimizer.momentum=0.99" / f"seed{seed}", seed, 0.80, optimizer__momentum=0.99)
    monkeypatch.setattr(command, "launch", lambda *args, **kwargs: {})  # every run has finished: nothing to train
    cfg = _findings_cfg(tmp_path, "findings.seeds=3")
    cfg.findings.factors = {"optimizer.momentum": [0.9, 0.99]}
    (same,) = command.findings(cfg)["claims"]
    assert same["verdict"] == "does not hold"  # 5-7 points lower on every seed
    report_main(["--root", str(outputs), "--findings", str(tmp_path / "results"), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report" / "report.md").read_text()
    # the six-epoch table gains the verdict at the study's budget; its own table gives the figure and the seeds
    assert re.search(r"\| momentum 0.99 does about as well as 0.9 \| .* \| \*\*[a-z ]+\*\* \| does not hold \|", md)
    assert f"| momentum 0.99 does about as well as 0.9 | **does not hold** | {same['figure']} | 0.99: 3; 0.9: 3 |" in md
    assert "### At the study's budget" in md and "6 one-factor runs (0 diverged)" in md and "findings.md` names" in md
    assert "](images/" in md.split("### At the study's budget")[1]  # its accuracy-vs-epoch plot, copied beside it
    # a folder without findings.json: one line that says what to give, and no report written
    with pytest.raises(SystemExit, match="has no findings.json: give the folder"):
        report_main(["--root", str(outputs), "--findings", str(tmp_path / "out"), "--out", str(tmp_path / "r2")])
    assert not (tmp_path / "r2").exists()


def test_only_runs_that_differ_in_one_factor_are_a_one_factor_comparison(tmp_path):
    import json

    from fmnist.report import discover
    from tests.test_findings import _run

    small = {"model__conv1_kernel": 5, "model__conv1_channels": 8, "model__conv2_channels": 8, "model__fc1_size": 50}
    for seed in range(2):
        _run(tmp_path / "compare_lr" / f"a{seed}", seed, 0.85)
        _run(tmp_path / "compare_lr" / f"b{seed}", seed, 0.84, optimizer__lr=0.001)
        _run(tmp_path / "compare_model" / f"a{seed}", seed, 0.85)  # a preset's keys: one factor, model
        _run(tmp_path / "compare_model" / f"b{seed}", seed, 0.84, **small)
        # fmnist.findings' run folders: one factor at a time from the base, two in all
        _run(tmp_path / "findings" / "base" / f"seed{seed}", seed, 0.85)
        _run(tmp_path / "findings" / "optimizer.lr=0.001" / f"seed{seed}", seed, 0.84, optimizer__lr=0.001)
        _run(tmp_path / "findings" / "optimizer.momentum=0.99" / f"seed{seed}", seed, 0.8, optimizer__momentum=0.99)
    for name in ("compare_lr", "compare_model", "findings"):
        (tmp_path / name / "multirun.yaml").write_text("{}\n")
    for path in tmp_path.glob("**/summary.json"):  # as fmnist.train writes them for a multirun's jobs
        path.write_text(json.dumps({**json.loads(path.read_text()), "multirun": True, "arch": {}}))
    assert discover(tmp_path)["compare"] == [tmp_path / "compare_lr", tmp_path / "compare_model"]
