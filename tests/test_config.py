"""The validated config: every refusal is one line naming the key and the fix, before any data is read; the config
reference (docs/configuration.md) agrees with the composed config."""

import re

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fmnist.core.errors import ConfigError, UserError, one_line_errors
from fmnist.prune import prune
from fmnist.training.run import train
from tests.helpers import REPO, SMALL, run_cli, small_cfg

NO_DATA = ["data.system_dir=null", "data.download=false"]  # with data.root empty: reading data would fail


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=0", "data.batch_size=0 must be a whole number >= 1"),
        ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0 must be a whole number >= 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be a whole number >= 1"),
        ("optimizer.momentum=2", r"optimizer.momentum=2 must be a number in \[0, 1\)"),
        ("optimizer.momentum=1.0", r"optimizer.momentum=1.0 must be a number in \[0, 1\)"),
        ("optimizer.lr=0", r"optimizer.lr=0 must be a number in \(0, inf\)"),
        ("optimizer.lr=-0.01", r"optimizer.lr=-0.01 must be a number in \(0, inf\)"),
        ("trainer.device=tpu9", "trainer.device='tpu9': use auto, cpu, cuda, cuda:N or mps"),
        ("trainer.device=cuda:x", "trainer.device='cuda:x': use auto"),
        ("trainer.threads=0", "trainer.threads=0 must be a whole number >= 1 \\(or null"),
        ("trainer.malloc_heap=maybe", "trainer.malloc_heap='maybe': use one of True, False"),
        ("trainer.chance_patience=0", "trainer.chance_patience=0 must be a whole number >= 1"),
        ("trainer.progress=maybe", "trainer.progress='maybe': use one of auto, True, False"),
        ("data.subset=1000", "data.val_size=1000 must be below data.subset=1000"),
        ("model.conv1_channels=0", "model.conv1_channels=0 must be a whole number >= 1"),
        ("model.weight_init=kaiming", "model.weight_init='kaiming': use one of xavier_normal"),
        ("logger.name=comet", "logger.name=.comet.: use one of wandb, none"),
        ("optimized_metric=f1", "optimized_metric='f1': use one of train_loss"),
    ],
)
def test_bad_training_values_are_refused_before_data(tmp_path, override, message):
    cfg = small_cfg(tmp_path / "run", override, f"data.root={tmp_path}", *NO_DATA)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing written


def test_data_root_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"data.root=.*afile is a file: give a folder"):
        train(small_cfg(tmp_path / "run", f"data.root={tmp_path / 'afile'}"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("prune.step=0", r"prune.step=0 must be a whole number >= 1 \(or one per layer"),
        ("prune.step={conv1:1,conv2:0,fc1:4}", "prune.step.conv2=0 must be a whole number >= 1"),
        ("prune.finetune_lr=-1", r"prune.finetune_lr=-1 must be a number in \(0, inf\)"),
        ("prune.finetune_epochs=-0.5", r"prune.finetune_epochs=-0.5 must be a number in \[0, inf\)"),
        ("prune.criterion=l3", "prune.criterion='l3': use one of l1, l2"),
        ("prune.min_units=0", "prune.min_units=0 must be a whole number >= 1"),
        ("prune.layers=[]", r"prune.layers=\[\] prunes nothing: give a list of"),
    ],
)
def test_bad_prune_values(tmp_path, override, message):
    cfg = small_cfg(tmp_path / "run", override, "prune.checkpoint=/nonexistent.pt", config_name="prune")
    with pytest.raises(ConfigError, match=message):  # refused before the checkpoint is even looked at
        prune(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("bench.images=0", r"bench.images=0 must be a whole number in \[1, 60000\]"),
        ("bench.images=70000", r"bench.images=70000 must be a whole number in \[1, 60000\]"),
        ("bench.repeats=0", "bench.repeats=0 must be a whole number >= 1"),
        ("bench.max_repeats=3", "bench.max_repeats=3 must be a whole number >= 5"),
        ("bench.halfwidth=0", r"bench.halfwidth=0 must be a number in \(0"),
        ("bench.engines=[]", r"bench.engines=\[\]: give a list of one or more of eager"),
        ("bench.original=a.pt", "bench.original and bench.pruned go together"),
    ],
)
def test_bad_bench_values_one_line_and_nothing_written(tmp_path, override, message):
    proc = run_cli(
        "fmnist.bench", override, f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'b'}", check=False
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith("error: ") and re.search(message, last), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b" / "summary.json").exists()


def test_cli_refusal_is_one_line(tmp_path):
    proc = run_cli("fmnist.train", *SMALL, "data.batch_size=0", f"hydra.run.dir={tmp_path}/r", check=False)
    expected = "error: data.batch_size=0 must be a whole number >= 1"
    assert proc.returncode == 1 and proc.stderr.strip() == expected, proc.stderr
    assert not (tmp_path / "r" / "metrics.csv").exists()


def test_only_user_errors_are_one_lined(capsys):
    @one_line_errors
    def bug():
        raise ValueError("an internal bug")

    @one_line_errors
    def user():
        raise UserError("data.root=/x has no files: install them")

    with pytest.raises(ValueError, match="an internal bug"):  # its traceback stays
        bug()
    with pytest.raises(SystemExit) as exit_info:
        user()
    assert exit_info.value.code == 1 and capsys.readouterr().err == "error: data.root=/x has no files: install them\n"


def _doc_table(heading: str) -> list[list[str]]:
    """The rows of the first table after `heading` in docs/configuration.md, as lists of cell strings."""
    text = (REPO / "docs" / "configuration.md").read_text()
    after = text[text.index(heading) :]
    lines = [line for line in after.splitlines() if line.startswith("|")]
    start = after.splitlines().index(lines[0])
    rows = []
    for line in after.splitlines()[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # header and rule


def _literal(cell: str):
    found = re.fullmatch(r"`([^`]*)`", cell)
    assert found, f"docs/configuration.md: default {cell!r} is not one backticked value"
    return yaml.safe_load(found.group(1)) if not found.group(1).startswith("${") else found.group(1)


def _compose(config_name: str, overrides=()):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.runtime.choices, OmegaConf.to_container(cfg, resolve=False)


def _value(container: dict, key: str):
    for part in key.split("."):
        container = container[part]
    return container


def test_config_reference_matches_the_config():
    choices, cfg = _compose("config")
    rows = _doc_table("## Training run")
    documented = set()
    for key_cell, default_cell, _ in rows:
        key = key_cell.strip("`")
        documented.add(key)
        expected = choices[key] if key in choices else _value(cfg, key)
        assert _literal(default_cell) == expected, f"docs say {key} = {default_cell}, the config {expected!r}"
    for group in ("data", "model", "optimizer", "trainer"):  # every key a user can set is documented
        for key in cfg[group]:
            if not key.startswith("_"):
                assert f"{group}.{key}" in documented, f"{group}.{key} is missing from docs/configuration.md"


def test_prune_presets_reference_matches_the_config():
    presets = {name: _compose("prune", [f"prune={name}"])[1]["prune"] for name in ("norm", "norm_finetune")}
    rows = _doc_table("| `prune.` key |")
    assert {row[0].strip("`") for row in rows} == set(presets["norm"])
    for key_cell, norm_cell, finetune_cell, _ in rows:
        key = key_cell.strip("`")
        for name, cell in (("norm", norm_cell), ("norm_finetune", finetune_cell)):
            assert _literal(cell) == presets[name][key], f"docs: prune={name} {key} = {cell}"


def test_latency_reference_matches_the_config():
    latency = _compose("prune")[1]["latency"]
    rows = _doc_table("| `latency.` key |")
    assert {row[0].strip("`") for row in rows} == set(latency)
    for key_cell, default_cell, _ in rows:
        key = key_cell.strip("`")
        assert _literal(default_cell) == latency[key] or default_cell.strip("`") == latency[key], key
