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


def _run(folder, seed, val, status="completed", start=None, epochs=6, cpu=None, **config):
    """A training run's summary.json and metrics.csv: validation accuracy rising linearly from `start` to `val` over
    `epochs` (a diverged run: two epochs at `val`, near chance)."""
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
        "trainer": {"seed": seed, "max_epochs": epochs},
    }
    for key, value in config.items():
        group, name = key.split("__")
        cfg[group][name] = value
    start = val if start is None else start
    n = 2 if status == "diverged" else epochs
    curve = [start + (val - start) * e / max(n - 1, 1) for e in range(n)]
    rows = [{"epoch": e + 1, "train_accuracy": v, "val_accuracy": v, "test_accuracy": v} for e, v in enumerate(curve)]
    runs.write_csv(rows, ["epoch", "train_accuracy", "val_accuracy", "test_accuracy"], folder / "metrics.csv")
    best = {"epoch": n, "val_accuracy": val, "test_accuracy": val, "val_loss": 0.4, "test_loss": 0.4}
    runs.write_summary(
        "train",
        {
            "status": status,
            "best": best if status == "completed" else None,
            "config": cfg,
            "device": "cpu",
            "precision": {"used": "fp32"},
            **({"cpu": cpu} if cpu else {}),
        },
        folder,
    )


def test_each_claim_is_judged_on_every_run(tmp_path):
    lr, mom, init, cap = (tmp_path / n for n in ("lr", "momentum", "init", "capacity"))
    for seed in range(3):
        _run(lr / f"a{seed}", seed, 0.1, status="diverged", optimizer__lr=0.1)  # never learns
        _run(lr / f"b{seed}", seed, 0.85 + 0.01 * seed, start=0.80 + 0.01 * seed, optimizer__lr=0.01)
        # lr 0.001 ends about where 0.01 does, but climbs from lower: it learns slower
        _run(lr / f"c{seed}", seed, 0.85 + 0.01 * seed, start=0.60 + 0.01 * seed, optimizer__lr=0.001)
        _run(mom / f"a{seed}", seed, 0.85 + 0.01 * seed, optimizer__momentum=0.9)
        _run(mom / f"b{seed}", seed, 0.85 + 0.01 * seed + 0.001 * (seed + 1), optimizer__momentum=0.99)  # +0.1..0.3
        _run(init / f"a{seed}", seed, 0.85 + 0.01 * seed, model__weight_init="xavier_normal")
        _run(init / f"b{seed}", seed, 0.85 + 0.01 * seed + 0.003 * seed, model__weight_init="xavier_uniform")
        _run(init / f"c{seed}", seed, 0.86 + 0.01 * seed, model__weight_init="normal")  # normal is better here
        _run(cap / f"m{seed}", seed, 0.85 + 0.01 * seed)  # medium
        small = {
            "model__conv1_kernel": 5,
            "model__conv1_channels": 8,
            "model__conv2_channels": 8,
            "model__fc1_size": 50,
        }
        _run(cap / f"s{seed}", seed, 0.84 + 0.01 * seed + 0.002 * seed, **small)  # about 1 point lower
        # large: a difference from medium that changes sign over the seeds: not settled
        large = {"model__conv1_kernel": 3, "model__conv1_channels": 16, "model__conv2_channels": 16}
        large["model__conv2_kernel"] = 3
        _run(cap / f"l{seed}", seed, 0.85 + 0.01 * seed + 0.004 * (seed - 1), **large)
    by_claim = {
        c["claim"]: c
        for c in claims({"optimizer.lr": lr, "optimizer.momentum": mom, "model.weight_init": init, "model": cap})
    }
    # "does not learn" is a rate: 0 of 3 learned has a Wilson interval [0, 56] %, not yet below one half
    never = by_claim["learning rate 0.1 does not learn"]
    assert never["verdict"] == "not settled" and "0 of 3 [0, 56] % of seeds learned, 3 diverged" in never["figure"]
    for seed in (3, 4):  # 0 of 5: [0, 43] %, below one half
        _run(lr / f"a{seed}", seed, 0.1, status="diverged", optimizer__lr=0.1)
    (never, slower) = claims({"optimizer.lr": lr})
    assert never["verdict"] == "holds" and "0 of 5 [0, 43] %" in never["figure"]
    # learns slower: the mean over a straight climb is its midpoint, 0.01's 10 points above 0.001's on every seed
    assert slower["verdict"] == "holds" and "lr 0.01 − lr 0.001 +10.00 points [+10.00, +10.00]" in slower["figure"]
    # +0.1, +0.2, +0.3 points: the 90 % interval [+0.03, +0.37] is inside ±0.5 (test_equivalence_... has the numbers)
    same = by_claim["momentum 0.99 does about as well as 0.9"]
    assert same["verdict"] == "holds" and "90 % interval [+0.03, +0.37], TOST p = 0.018" in same["figure"]
    assert by_claim["Xavier initialization beats a plain normal one"]["verdict"] == "does not hold"
    capacity = by_claim["the medium model does best (small ones underfit, large ones overfit)"]
    assert capacity["verdict"] == "not settled"
    # the open comparison (large) says what settling it would take; the settled one (small) does not
    assert capacity["figure"].count("would clear zero with 80 % power") == 1 and "(n=3), " in capacity["figure"]
    assert "smaller batches do better in the same number of epochs" not in by_claim  # no batch comparison given


def test_diverged_runs_count_at_the_accuracy_they_reached(tmp_path):
    init = tmp_path / "init"
    for seed in range(3):  # normal init diverges on two seeds of three
        _run(init / f"a{seed}", seed, 0.86, model__weight_init="xavier_normal")
        _run(init / f"b{seed}", seed, 0.86, model__weight_init="xavier_uniform")
        status = "completed" if seed == 2 else "diverged"
        _run(init / f"c{seed}", seed, 0.80 if seed == 2 else 0.10, status=status, model__weight_init="normal")
    (xavier,) = claims({"model.weight_init": init})
    # every seed pairs: +76, +76, +6 points, whose interval [-47.7, +152.4] straddles 0 with 3 seeds
    assert xavier["verdict"] == "not settled" and "xavier_normal − normal +52.67 points" in xavier["figure"]
    assert "normal: 2 of 3 [21, 94] % diverged" in xavier["figure"]  # the Wilson interval of 2 of 3
    assert xavier["diverged"]["normal"]["k"] == 2 and xavier["diverged"]["xavier_normal"]["k"] == 0
    _run(init / "c2", 2, 0.10, status="diverged", model__weight_init="normal")  # the third diverges too
    (xavier,) = claims({"model.weight_init": init})
    assert xavier["verdict"] == "holds" and "+76.00 points" in xavier["figure"]


def test_equivalence_holds_fails_or_stays_open():
    from fmnist.analysis.findings import equivalence

    # mean +0.2 points, sd 0.1, n 3: 90 % interval +0.2 ± 2.920 * 0.1 / sqrt(3) = [+0.03, +0.37], inside ±0.5
    near = equivalence([0.001, 0.002, 0.003], 0.005)
    assert near["verdict"] is True and near["low90"] == pytest.approx(0.000314, abs=1e-6)
    # TOST: the larger one-sided p, t = (0.002 - 0.005) / (0.001 / sqrt(3)) = -5.196 on 2 df: 1/2 - t/(2 sqrt(2+t^2))
    assert near["p"] == pytest.approx(0.5 - 5.196 / (2 * (2 + 5.196**2) ** 0.5), abs=1e-4)
    assert equivalence([0.019, 0.020, 0.021], 0.005)["verdict"] is False  # 2 points apart, shown beyond ±0.5
    assert equivalence([-0.01, 0.0, 0.012], 0.005)["verdict"] is None  # too spread to say either
    assert equivalence([0.001], 0.005)["verdict"] is None  # one seed: no test


def test_a_record_names_the_cpu_that_ran_the_run(tmp_path):
    import json

    from omegaconf import OmegaConf

    from fmnist.core.machine import cpu_name
    from fmnist.findings import collect

    f = OmegaConf.create({"out": str(tmp_path / "out"), "results": str(tmp_path / "results")})
    _run(tmp_path / "out" / "base" / "seed0", 0, 0.9, cpu="AMD EPYC (family 23 model 1)")  # trained on another CPU
    _run(tmp_path / "out" / "base" / "seed1", 1, 0.9)  # a summary from before summaries named their CPU
    assert collect(f, {"base": {}}) == 2 and collect(f, {"base": {}}) == 0  # each recorded once
    cpus = [json.loads((tmp_path / "results" / "runs" / "base" / f"seed{s}.json").read_text())["cpu"] for s in (0, 1)]
    assert cpus == ["AMD EPYC (family 23 model 1)", cpu_name()]


def test_the_commands_wall_time_is_the_union_of_its_runs_epochs(tmp_path):
    from fmnist.analysis.findings import record, wall_seconds

    def timed(name, seed, epochs):  # (epoch seconds, ended at) per epoch
        _run(tmp_path / name, seed, 0.9, epochs=len(epochs))
        rows = runs.read_csv(tmp_path / name / "metrics.csv")
        for row, (seconds, ended) in zip(rows, epochs, strict=True):
            row.update(epoch_seconds=seconds, ended_at=ended)
        runs.write_csv(rows, [*rows[0]], tmp_path / name / "metrics.csv")
        return record(tmp_path / name)

    # a: two epochs 1 s apart (one stretch), then cut and resumed the next session; b ran beside a's first stretch
    a = timed("a", 0, [(10, 1010), (10, 1021), (10, 5010)])
    b = timed("b", 1, [(10, 1015), (10, 1025)])
    assert a["spans"] == [[1000, 1021], [5000, 5010]] and b["spans"] == [[1005, 1025]]
    assert wall_seconds([a, b]) == 25 + 10 and wall_seconds([b]) == 20
    _run(tmp_path / "old", 2, 0.9)  # a run from before epochs had end times: no spans, no wall time
    assert record(tmp_path / "old")["spans"] is None and wall_seconds([record(tmp_path / "old")]) == 0
    # one resumed by the code that began writing them: its last epochs only would undercount it, so none
    assert timed("resumed", 3, [(10, ""), (10, 2010)])["spans"] is None


def _findings_cfg(tmp_path, *overrides):
    from omegaconf import open_dict

    from tests.helpers import compose_cfg

    cfg = compose_cfg(
        tmp_path,
        [
            f"findings.out={tmp_path}/out",
            f"findings.results={tmp_path}/results",
            "findings.seeds=2",
            "findings.more_seeds=3",
            "++findings.base={trainer.max_epochs:2,data.subset:3000}",
            "findings.extra=['logger=none','trainer.threads=1','data.val_size=500','trainer.device=cpu']",
            *overrides,
        ],
        config_name="findings",
    )
    with open_dict(cfg):
        cfg.findings.factors = {"optimizer.lr": [0.1, 0.01]}  # one factor, its two values: the base is lr 0.01
    return cfg


def test_more_seeds_go_only_to_the_settings_of_a_claim_still_open(tmp_path, monkeypatch):
    # lr 0.1 learned on 2 of 3 seeds (open); lr 0.001 climbs 10 points below 0.01 on every seed (holds at 3): seeds
    # 3-4 of lr 0.1 only; more runs of 0.01 and 0.001 would change a verdict already reached (they once were trained)
    import fmnist.findings as command

    out = tmp_path / "out"
    for seed in range(3):
        _run(
            out / "optimizer.lr=0.1" / f"seed{seed}",
            seed,
            0.1 if seed == 0 else 0.84,
            status="diverged" if seed == 0 else "completed",
            optimizer__lr=0.1,
        )
        _run(out / "base" / f"seed{seed}", seed, 0.85 + 0.01 * seed, start=0.80, optimizer__lr=0.01)
        _run(out / "optimizer.lr=0.001" / f"seed{seed}", seed, 0.85 + 0.01 * seed, start=0.60, optimizer__lr=0.001)
    asked = []
    # launch trains what has no summary yet (as fmnist.training.jobs.launch does): here, only records what it asked
    monkeypatch.setattr(
        command,
        "launch",
        lambda jobs, *args, **kwargs: asked.append([job for job, _ in jobs if not runs.summary_of(out / job, "train")]),
    )
    cfg = _findings_cfg(tmp_path, "findings.seeds=3", "findings.more_seeds=5")
    cfg.findings.factors = {"optimizer.lr": [0.1, 0.01, 0.001]}
    (never, slower) = command.findings(cfg)["claims"]
    assert never["verdict"] == "not settled" and slower["verdict"] == "holds"
    assert asked == [[], ["optimizer.lr=0.1/seed3", "optimizer.lr=0.1/seed4"]]  # the first seeds were all there


def test_a_confirmation_trains_its_fixed_seeds_and_is_judged_once_all_are_in(tmp_path, monkeypatch):
    # lr 0.01 vs 0.001 open at 3 seeds; a confirmation fixes 5: seeds 3-4 of both, seed by seed, after the rest
    import fmnist.findings as command

    out = tmp_path / "out"
    gaps = {0: 0.02, 1: -0.02, 2: 0.01, 3: 0.03, 4: 0.03}  # how far lr 0.001 starts below 0.01, per seed

    def make(seed):
        _run(out / "base" / f"seed{seed}", seed, 0.85, start=0.80, optimizer__lr=0.01)
        _run(out / "optimizer.lr=0.001" / f"seed{seed}", seed, 0.85, start=0.80 - gaps[seed], optimizer__lr=0.001)

    for seed in range(3):
        make(seed)
    asked, cut_after = [], {}

    def launch(jobs, *args, **kwargs):  # trains (here: writes) what has no summary yet, up to a cut session's end
        todo = [job for job, _ in jobs if not runs.summary_of(out / job, "train")]
        asked.append(todo)
        for job in todo[: cut_after.get("n", len(todo))]:
            name, seed = job.split("/")
            make(int(seed.removeprefix("seed"))) if name == "base" else None

    monkeypatch.setattr(command, "launch", launch)
    cfg = _findings_cfg(tmp_path, "findings.seeds=2", "findings.more_seeds=3")
    cfg.findings.factors = {"optimizer.lr": [0.01, 0.001]}
    cfg.findings.confirm = {"optimizer.lr": {"values": [0.01, 0.001], "seeds": 5}, "model": {"values": [1], "seeds": 1}}
    cut_after["n"] = 2  # the session ends after seed 3's pair
    (_, slower) = command.findings(cfg)["claims"]
    pairs = ["base/seed3", "optimizer.lr=0.001/seed3", "base/seed4", "optimizer.lr=0.001/seed4"]
    assert asked[-1] == pairs  # the confirmation's runs, seed by seed (a factor not run, model, is left alone)
    # seed 3's pair is recorded but not looked at: the verdict stays the one at 3 seeds until all 10 runs are in
    assert slower["verdict"] == "not settled" and slower["seeds"] == {"0.01": [0, 1, 2], "0.001": [0, 1, 2]}
    assert "(n=3)" in slower["figure"] and "at 5 seeds, a number fixed" in slower["figure"]
    assert "8 of 10 runs recorded, judged once all are" in slower["figure"]
    del cut_after["n"]  # the next session trains the rest, and the comparison is judged on every seed
    (_, slower) = command.findings(cfg)["claims"]
    assert asked[-1] == pairs[2:] and slower["seeds"] == {"0.01": [0, 1, 2, 3, 4], "0.001": [0, 1, 2, 3, 4]}
    assert "(n=5)" in slower["figure"] and "judged once, 0.01 vs 0.001 at 5 seeds" in slower["figure"]
    assert (tmp_path / "results" / "findings.json").read_text().count('"recorded": 10') == 1


def test_a_confirmation_judged_open_at_its_fixed_seeds_no_longer_offers_more(tmp_path, monkeypatch):
    # lr 0.01 vs 0.001 at 5 seeds, all recorded, gaps both ways: the one judgement leaves it open, and that is final
    import fmnist.findings as command

    out = tmp_path / "out"
    for seed, gap in enumerate([0.02, -0.02, 0.01, -0.03, 0.015]):
        _run(out / "base" / f"seed{seed}", seed, 0.85, start=0.80, optimizer__lr=0.01)
        _run(out / "optimizer.lr=0.001" / f"seed{seed}", seed, 0.85, start=0.80 - gap, optimizer__lr=0.001)
    monkeypatch.setattr(command, "launch", lambda *a, **k: None)  # everything is recorded: nothing to train
    cfg = _findings_cfg(tmp_path, "findings.seeds=2", "findings.more_seeds=3")
    cfg.findings.factors = {"optimizer.lr": [0.01, 0.001]}
    cfg.findings.confirm = {"optimizer.lr": {"values": [0.01, 0.001], "seeds": 5}}
    (_, slower) = command.findings(cfg)["claims"]
    assert slower["verdict"] == "not settled" and "(n=5)" in slower["figure"]
    assert "judged once, 0.01 vs 0.001 at 5 seeds" in slower["figure"] and "would clear zero" not in slower["figure"]
    cfg.findings.confirm = {
        "optimizer.lr": {"values": [0.01, 0.001], "seeds": 6}
    }  # the same runs, a confirmation not complete: open, more offered
    (_, slower) = command.findings(cfg)["claims"]
    assert "(n=3)" in slower["figure"] and "seeds would clear zero with 80 % power" in slower["figure"]


def test_a_judged_confirmation_counts_its_extra_seeds_for_its_own_two_settings_only():
    # batch 64 vs 512 confirmed at 8 seeds; the base (batch 128) has 8 seeds too, for another factor's confirmation
    from fmnist.findings import counted

    by_factor = {"data.batch_size": {64: "b64", 128: "base", 512: "b512"}, "model": {"medium": "base", "large": "big"}}
    records = [{"setting": name, "seed": s} for name in ("b64", "base", "b512", "big") for s in range(8)]
    batch = {"values": [64, 512], "seeds": 8, "runs": [(n, s) for s in range(8) for n in ("b64", "b512")]}
    model = {"values": ["medium", "large"], "seeds": 8, "runs": [(n, s) for s in range(8) for n in ("base", "big")]}
    seeds = lambda found, name: [r["seed"] for r in found if r["setting"] == name]  # noqa: E731
    judged = counted(
        records, by_factor, 5, {"data.batch_size": {**batch, "recorded": 16}, "model": {**model, "recorded": 15}}
    )
    assert seeds(judged["data.batch_size"], "b64") == seeds(judged["data.batch_size"], "b512") == list(range(8))
    assert seeds(judged["data.batch_size"], "base") == list(range(5))  # the base's extra seeds are not batch's
    assert seeds(judged["model"], "base") == seeds(judged["model"], "big") == list(range(5))  # 15 of 16: not yet


def test_a_narrowed_run_is_refused_the_page_that_judges_more_and_writes_its_own(tmp_path, monkeypatch):
    # the page judges lr and momentum; a run of lr alone would cut it down to lr's claims: refused before anything
    # trains or is written, and given its own page (findings.page) it writes that one beside it
    import fmnist.findings as command
    from fmnist.core.errors import ConfigError

    out, results = tmp_path / "out", tmp_path / "results"
    for seed in range(2):
        _run(out / "base" / f"seed{seed}", seed, 0.85, start=0.80, optimizer__lr=0.01)
        _run(out / "optimizer.lr=0.1" / f"seed{seed}", seed, 0.84, optimizer__lr=0.1)
        _run(out / "optimizer.momentum=0.99" / f"seed{seed}", seed, 0.80, optimizer__momentum=0.99)
    asked = []
    # launch trains what has no summary yet (as fmnist.training.jobs.launch does): here, only records what it would
    monkeypatch.setattr(
        command,
        "launch",
        lambda jobs, *a, **k: asked.extend(j for j, _ in jobs if not runs.summary_of(out / j, "train")),
    )
    cfg = _findings_cfg(tmp_path, "findings.more_seeds=2")
    cfg.findings.factors = {"optimizer.lr": [0.1, 0.01], "optimizer.momentum": [0.9, 0.99]}
    whole = command.findings(cfg)
    assert {c["key"] for c in whole["claims"]} == {"optimizer.lr", "optimizer.momentum"} and asked == []
    page, kept = (results / "findings.md").read_text(), (results / "findings.json").read_text()
    drawn = (results / "plots" / "optimizer.lr.png").stat().st_mtime_ns  # the page's figure: not redrawn after
    cfg.findings.factors = {"optimizer.lr": [0.1, 0.01]}
    cfg.findings.seeds = cfg.findings.more_seeds = 3  # its seed 2 runs would train first: refused before them
    with pytest.raises(ConfigError, match=r"findings.md also judges optimizer.momentum, which this run would drop;"):
        command.findings(cfg)
    assert asked == [] and (results / "findings.md").read_text() == page
    assert (results / "findings.json").read_text() == kept
    cfg.findings.seeds = cfg.findings.more_seeds = 2
    cfg.findings.page = "lr"
    narrowed = command.findings(cfg)
    assert {c["key"] for c in narrowed["claims"]} == {"optimizer.lr"}
    assert "| learning rate 0.1 does not learn |" in (results / "lr.md").read_text()
    assert "(lr.plots/optimizer.lr.png)" in (results / "lr.md").read_text() and (results / "lr.plots").is_dir()
    assert "| momentum 0.99" not in (results / "lr.md").read_text() and "| momentum 0.99" in page
    assert (results / "findings.md").read_text() == page
    assert (results / "plots" / "optimizer.lr.png").stat().st_mtime_ns == drawn
    assert command.findings(cfg)["runs"] == 6  # its own page again: a narrowed page is not refused itself


@pytest.mark.slow  # eight short runs through joblib's worker processes: two minutes on 2 cores
def test_findings_trains_records_judges_and_resumes(tmp_path):
    import json
    import shutil

    from fmnist.core.machine import cpu_name
    from fmnist.findings import findings

    result = findings(_findings_cfg(tmp_path))
    records = sorted((tmp_path / "results" / "runs").glob("*/seed*.json"))
    # two seeds of lr 0.1 and of the base, then a third of each: 'does not learn' is open at n=2 (and at 3)
    assert [f"{p.parent.name}/{p.stem}" for p in records] == [
        f"{name}/seed{s}" for name in ("base", "optimizer.lr=0.1") for s in range(3)
    ]
    first = json.loads(records[0].read_text())
    assert first["status"] == "completed" and [row["epoch"] for row in first["curve"]] == [1, 2]
    assert first["cpu"] == cpu_name()  # from the run's summary
    # the command's wall time: the union of its six runs' epochs, each run's within its own time, all of them within
    # this invocation's (every run trained in it)
    ((start, end),) = first["spans"]
    assert 0 < end - start <= first["seconds"]
    assert result["wall_runs"] == 6 and list(result["wall_seconds_by_cpu"]) == [cpu_name()]
    assert end - start < result["wall_seconds_by_cpu"][cpu_name()] <= result["invocation_seconds"]
    assert first["config"]["data.subset"] == 3000 and first["config"]["model.conv1_channels"] == 12  # the medium
    (never, slower) = result["claims"]
    assert never["claim"] == "learning rate 0.1 does not learn" and never["verdict"] in ("not settled", "does not hold")
    assert never["seeds"] == {"0.1": [0, 1, 2]} and "no common seeds" in slower["figure"]  # no lr 0.001 run
    md = (tmp_path / "results" / "findings.md").read_text()
    assert "| learning rate 0.1 does not learn |" in md and "(plots/optimizer.lr.png)" in md
    assert (tmp_path / "results" / "plots" / "optimizer.lr.png").read_bytes()[:4] == b"\x89PNG"
    # another session: the run folders are gone, the committed records are not; nothing is trained again
    shutil.rmtree(tmp_path / "out")
    assert findings(_findings_cfg(tmp_path))["runs"] == 6 and not (tmp_path / "out").exists()
    # a run finished but not recorded (the session was cut after it): recorded without training; a missing one trains
    records[0].unlink()
    records[1].unlink()
    findings(_findings_cfg(tmp_path, "findings.train=false"))
    assert not records[0].exists()  # train=false trains nothing
    again = findings(_findings_cfg(tmp_path))
    assert again["runs"] == 6 and json.loads(records[0].read_text())["curve"] == first["curve"]  # same seed, same run
    assert sorted(p.name for p in (tmp_path / "out" / "base").iterdir()) == ["seed0", "seed1"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("findings.seeds=1", r"findings.seeds=1 must be a whole number >= 2 \(a verdict needs an interval\)"),
        ("findings.margin=0", r"findings.margin=0 must be"),
        ("findings.base.model=huge", "model values are presets of conf/model/: small, medium, large"),
        ("findings.confirm.model.seeds=5", r"findings.confirm.model.seeds=5 must be a whole number >= 6 \(more than"),
        ("findings.confirm.model=18", r"findings.confirm.model=18: give \{values: \[two of its values\], seeds: N\}"),
        ("findings.confirm.model.values=[medium,huge]", r"confirm.model.values=\['medium', 'huge'\]: give two of"),
        ("findings.page=a/b", r"findings.page=a/b: give a file name without a folder, e.g. findings.page=lr"),
    ],
)
def test_findings_bad_input_is_one_line(tmp_path, override, message):
    from tests.helpers import run_cli

    proc = run_cli(
        "fmnist.findings", f"findings.out={tmp_path}/out", f"findings.results={tmp_path}/r", override, check=False
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert __import__("re").search(message, proc.stderr) and not (tmp_path / "r").exists()
