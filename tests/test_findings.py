"""The study's findings, computed: importances from a search, and each claim judged on runs over seeds."""

import optuna
import pytest

from fmnist.analysis.findings import claims, search_findings
from fmnist.core import runs


def test_importance_goes_to_the_parameter_that_decides_the_value(tmp_path):
    # the value depends on x only; y is noise-free but irrelevant; pruned trials do not count
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask(
            {
                "x": optuna.distributions.FloatDistribution(0, 1),
                "y": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
            }
        )
        study.tell(trial, trial.params["x"] ** 2)
    pruned = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    found = search_findings(study, tmp_path)
    assert found["trials"] == 30 and set(found["importances"]) == {"x", "y"}
    assert found["importances"]["x"] > 0.9 and sum(found["importances"].values()) == pytest.approx(1, abs=1e-3)
    assert search_findings(optuna.create_study(), tmp_path / "empty") == {}  # nothing to attribute


def test_importances_of_a_pruned_search_at_the_deepest_epoch_most_trials_reached(tmp_path):
    # 20 trials reach epoch 1, 12 reach epoch 3 (where x decides), 2 complete (where y would): ASHA's shape
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    space = {
        "x": optuna.distributions.FloatDistribution(0, 1),
        "y": optuna.distributions.CategoricalDistribution(["a", "b"]),
    }
    for i in range(20):
        trial = study.ask(space)
        trial.report(0.1, 1)
        if i < 12:
            trial.report(trial.params["x"], 3)
        if i < 2:
            study.tell(trial, 1.0 if trial.params["y"] == "a" else 0.0)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    found = search_findings(study, tmp_path)
    assert found["trials"] == 12 and found["target"].startswith("validation accuracy at epoch 3")
    assert found["importances"]["x"] > 0.9
    # counting only some trials (a sweep leaves out repeated proposals): fewer than 10, so all 5 must reach the epoch
    few = search_findings(study, tmp_path / "few", study.trials[:5])
    assert few["trials"] == 5 and few["target"].startswith("validation accuracy at epoch 3")


def _run(folder, seed, val, status="completed", **config):
    cfg = {
        "data": {"batch_size": 128, "val_size": 5000, "split_seed": 0, "subset": 15000},
        "model": {
            "conv1_channels": 12,
            "conv1_kernel": 3,
            "conv2_channels": 16,
            "conv2_kernel": 5,
            "fc1_size": 100,
            "weight_init": "xavier_normal",
        },
        "optimizer": {"lr": 0.01, "momentum": 0.9},
        "trainer": {"seed": seed, "max_epochs": 6},
    }
    for key, value in config.items():
        group, name = key.split("__")
        cfg[group][name] = value
    best = {"epoch": 6, "val_accuracy": val, "test_accuracy": val, "val_loss": 0.4, "test_loss": 0.4}
    runs.write_summary(
        "train",
        {
            "status": status,
            "best": best if status == "completed" else None,
            "config": cfg,
            "device": "cpu",
            "precision": {"used": "fp32"},
        },
        folder,
    )


def test_each_claim_is_judged_by_its_paired_interval(tmp_path):
    lr, mom, init, cap = (tmp_path / n for n in ("lr", "momentum", "init", "capacity"))
    for seed in range(3):
        _run(lr / f"a{seed}", seed, 0.0, status="diverged", optimizer__lr=0.1)  # never learns
        _run(lr / f"b{seed}", seed, 0.85 + 0.01 * seed, optimizer__lr=0.01)
        _run(lr / f"c{seed}", seed, 0.80 + 0.01 * seed + 0.002 * (seed == 1), optimizer__lr=0.001)  # ~5 points lower
        _run(mom / f"a{seed}", seed, 0.85 + 0.01 * seed, optimizer__momentum=0.9)
        _run(mom / f"b{seed}", seed, 0.85 + 0.01 * seed + 0.001 * (seed - 1), optimizer__momentum=0.99)  # ~equal
        _run(init / f"a{seed}", seed, 0.85 + 0.01 * seed, model__weight_init="xavier_normal")
        _run(init / f"b{seed}", seed, 0.85 + 0.01 * seed + 0.003 * seed, model__weight_init="xavier_uniform")
        _run(init / f"c{seed}", seed, 0.86 + 0.01 * seed, model__weight_init="normal")  # normal is better here
        _run(cap / f"m{seed}", seed, 0.85 + 0.01 * seed)  # medium
        _run(
            cap / f"s{seed}",
            seed,
            0.84 + 0.01 * seed + 0.002 * seed,
            model__conv1_kernel=5,
            model__conv1_channels=8,
            model__conv2_channels=8,
            model__fc1_size=50,
        )  # small: about 1 point lower
        # large: a difference from medium that changes sign over the seeds: not settled
        _run(
            cap / f"l{seed}",
            seed,
            0.85 + 0.01 * seed + 0.004 * (seed - 1),
            model__conv1_kernel=5,
            model__conv1_channels=16,
            model__conv2_channels=16,
        )
    by_claim = {
        c["claim"]: c
        for c in claims({"optimizer.lr": lr, "optimizer.momentum": mom, "model.weight_init": init, "model": cap})
    }
    assert by_claim["learning rate 0.1 does not learn"]["verdict"] == "holds"
    assert "3 of 3 seeds diverged" in by_claim["learning rate 0.1 does not learn"]["figure"]
    slower = by_claim["learning rate 0.001 learns slower than 0.01"]
    assert slower["verdict"] == "holds" and "lr 0.01 − lr 0.001 +4.93 points" in slower["figure"]
    assert by_claim["momentum 0.99 does about as well as 0.9"]["verdict"] == "holds"
    assert by_claim["Xavier initialization beats a plain normal one"]["verdict"] == "does not hold"
    # normal init diverging on two seeds of three: one seed left to pair, no interval, and the figure says why
    for seed in range(3):
        _run(tmp_path / "init2" / f"a{seed}", seed, 0.86, model__weight_init="xavier_normal")
        _run(tmp_path / "init2" / f"b{seed}", seed, 0.86, model__weight_init="xavier_uniform")
        _run(
            tmp_path / "init2" / f"c{seed}",
            seed,
            0.80,
            status="completed" if seed == 2 else "diverged",
            model__weight_init="normal",
        )
    (xavier,) = claims({"model.weight_init": tmp_path / "init2"})
    assert xavier["verdict"] == "not settled" and "(one seed: no interval)" in xavier["figure"]
    assert xavier["figure"].endswith("(normal: 2 of 3 seeds diverged)")
    assert by_claim["the medium model does best (small ones underfit, large ones overfit)"]["verdict"] == "not settled"
    assert "smaller batches do better in the same number of epochs" not in by_claim  # no batch comparison given
