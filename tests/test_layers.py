"""The floor plan (fmnist/__init__.py): core, then training, then the concerns side by side (search, pruning,
analysis), then the stages; no import circle anywhere, function-level imports included; a concern never imports
another, a stage never imports another stage; an import inside a function is a heavy optional dependency and says so.
Every import is read with `ast`, nothing is imported."""

import ast
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("fmnist", "hydra_plugins/fmnist_sweeper")
# what may be imported inside a function: slow or optional, and never needed by every caller of the module
HEAVY = (
    "matplotlib",
    "onnxruntime",
    "onnx",
    "optuna",
    "wandb",
    "torch._inductor",
    "torchvision",
    "openvino",
    "nncf",
    "submitit",
    "hydra_plugins.hydra_submitit_launcher",
)


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: set[str]) -> list[tuple[str, str, int, bool]]:
    """(imported name, project module it resolves to or '', line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text())
    nested = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
        if n is not f
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from fmnist.core import runs` names the module fmnist.core.runs; `from fmnist.core.runs import X` not
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [name if name in known else node.module for name in names]
        else:
            continue
        for name in names:
            target = next((m for m in (name, name.rsplit(".", 1)[0]) if m in known), "")
            out.append((name, target, node.lineno, id(node) in nested))
    return out


CONCERNS = ("search", "pruning", "analysis")  # floor 3, side by side: none imports another
FLOORS = {"core": 1, "training": 2, **dict.fromkeys(CONCERNS, 3)}
STAGE = 4


def concern(module: str) -> str:
    """The package a module lives in: fmnist.search.sweeper -> search; a stage or the plugin -> ''."""
    parts = module.split(".")
    return parts[1] if parts[0] == "fmnist" and len(parts) > 1 and parts[1] in FLOORS else ""


def floor(module: str) -> int:
    """As the README's layout numbers them: 1 core, 2 training, 3 search | pruning | analysis, 4 stages."""
    if module == "fmnist":
        return 0  # the package's docstring only
    return FLOORS.get(concern(module), STAGE)  # else a stage (fmnist/<name>.py) or the Hydra plugin


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    return {m: {t for _, t, _, _ in imports(p, set(mods)) if t and t != m} for m, p in mods.items()}


def circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def wrong_floor(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in edges.items():
        for t in targets:
            if floor(t) > floor(m):
                bad.append(f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)}): move what it needs down")
            elif floor(t) == floor(m) == STAGE:
                bad.append(f"stage {m} imports stage {t}: what two stages share moves down a floor")
            elif floor(t) == floor(m) == 3 and concern(t) != concern(m):
                bad.append(
                    f"{m} imports {t}: search, pruning and analysis never import each other; move the shared "
                    "piece down to training or core, or call both from a stage"
                )
    return sorted(bad)


def import_optuna(mods: dict[str, Path]) -> set[str]:
    """The project modules that import optuna at their top level: slow to import, so never in a single run."""
    known = set(mods)
    return {m for m, p in mods.items() if any(n.startswith("optuna") and not f for n, _, _, f in imports(p, known))}


def test_no_import_circle():
    assert circle(graph(REPO)) is None


def test_every_import_goes_down_a_floor_and_no_stage_imports_another():
    assert wrong_floor(graph(REPO)) == []


def test_stages_are_the_entry_points():
    """A stage is a command (it runs as `python -m fmnist.NAME`); nothing below the stages is one."""
    for name, path in modules(REPO).items():
        entry = 'if __name__ == "__main__":' in path.read_text()
        assert entry == (floor(name) == STAGE and name.startswith("fmnist.")), name


def test_function_level_imports_are_heavy_and_say_why():
    mods = modules(REPO)
    slow = import_optuna(mods)
    for path in mods.values():
        lines = path.read_text().splitlines()
        for imported, target, line, inside in imports(path, set(mods)):
            if not inside:
                continue
            where = f"{path.relative_to(REPO)}:{line} imports {imported} inside a function"
            assert imported.startswith(HEAVY) or target in slow, f"{where}: import it at the top"
            assert "#" in lines[line - 1] or lines[line - 2].strip().startswith("#"), f"{where} without saying why"


def test_slow_imports_stay_out_of_a_single_run():
    """`python -m fmnist.train` (no --multirun) and the other single runs never import optuna at import time."""
    mods = modules(REPO)
    top = {m: {t for _, t, _, f in imports(p, set(mods)) if t and not f} for m, p in mods.items()}
    heavy = import_optuna(mods)
    for stage in ("fmnist.train", "fmnist.prune", "fmnist.bench", "fmnist.report", "hydra_plugins.fmnist_sweeper"):
        seen, todo = set(), [stage]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += top[m]
        assert not seen & heavy, f"{stage} imports {sorted(seen & heavy)}, which import optuna"


@pytest.fixture
def copy_of_the_package(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_circle_added_by_hand_is_found(copy_of_the_package):
    """checkpoint imports runs; a function in runs importing checkpoint back closes a circle inside one floor."""
    runs = copy_of_the_package / "fmnist/core/runs.py"
    runs.write_text(
        runs.read_text() + "\n\ndef _load(path):\n    from fmnist.core import checkpoint\n\n    return "
        "checkpoint.load(path)\n"
    )
    found = circle(graph(copy_of_the_package))
    assert found and found[0] == found[-1] and {"fmnist.core.runs", "fmnist.core.checkpoint"} <= set(found)


def test_an_import_up_a_floor_or_across_stages_is_found(copy_of_the_package):
    model = copy_of_the_package / "fmnist/core/model.py"
    model.write_text(model.read_text() + "\nfrom fmnist.pruning.units import lattice  # noqa\n")
    bench = copy_of_the_package / "fmnist/bench.py"
    bench.write_text(bench.read_text() + "\nfrom fmnist.prune import prune  # noqa\n")
    bad = wrong_floor(graph(copy_of_the_package))
    assert any(b.startswith("fmnist.core.model (floor 1) imports fmnist.pruning.units") for b in bad), bad
    assert "stage fmnist.bench imports stage fmnist.prune" in " ".join(bad)
    assert circle(graph(copy_of_the_package))  # units imports model back


def test_an_import_across_concerns_is_found(copy_of_the_package):
    """The sweep loop reaching the analysis (as it once did for its importances and plots) is refused."""
    trials = copy_of_the_package / "fmnist/search/trials.py"
    trials.write_text(trials.read_text() + "\nfrom fmnist.analysis.plots import sweep_curves  # noqa\n")
    bad = wrong_floor(graph(copy_of_the_package))
    assert any(b.startswith("fmnist.search.trials imports fmnist.analysis.plots") for b in bad), bad


def test_the_sweep_loop_reaches_no_analysis():
    """Everything the sweeper imports, at any depth and inside functions too, stays out of fmnist.analysis: a change
    to a plot cannot break a running search, and no worker fits importances inside its loop."""
    edges = graph(REPO)
    seen, todo = set(), ["hydra_plugins.fmnist_sweeper", "fmnist.search.sweeper"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += edges.get(m, ())
    assert "fmnist.search.trials" in seen  # the loop writes its trial table
    assert not {m for m in seen if concern(m) == "analysis"}
