"""The README is a door: short, every docs/ page reachable from it, every link and anchor in README and docs/ real,
and every command of its Commands table composes as typed (the commands themselves run in the other tests)."""

import importlib
import inspect
import re
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS, REPO / "results/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if re.match(r"#{1,6} ", line)}


def commands() -> list[str]:
    """The first column of the README's Commands table."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Commands") :].split("\n\n")[1]
    return [re.match(r"\| `([^`]+)` \|", row).group(1) for row in table.splitlines()[2:]]


def test_readme_is_at_most_250_lines_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = {target.split("#")[0] for target in LINK.findall(readme)}
    for page in DOCS:
        assert f"docs/{page.name}" in linked, f"docs/{page.name} is not linked from the README"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_anchor_exists(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name} links to #{anchor}, no such heading in {file.name}"


def test_results_say_what_is_true_now():
    """The front page's table cells stay short, the results page stays a page, and every folder under results/ is
    listed in results/README.md (the current make reproduce and a few named archives)."""
    cells = [
        c.strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("|")
        for c in line.strip().strip("|").split("|")
    ]
    assert max(map(len, cells)) <= 200, max(cells, key=len)
    assert len((REPO / "docs/results.md").read_text().splitlines()) <= 250
    listed = (REPO / "results/README.md").read_text()
    for folder in (p for p in (REPO / "results").iterdir() if p.is_dir()):
        assert f"[`{folder.name}/`]({folder.name}/)" in listed, f"results/{folder.name} is not in results/README.md"


def test_the_commands_table_lists_every_stage():
    stages = {p.stem for p in (REPO / "fmnist").glob("*.py") if p.stem != "__init__"}
    listed = {c.split()[2].removeprefix("fmnist.") for c in commands() if c.startswith("python -m")}
    assert listed == stages


@pytest.mark.parametrize("command", commands())
def test_every_readme_command_composes(command, capsys):
    """Each stage imports, and the Hydra ones compose their config with the command's overrides (in-process, no run);
    the argparse ones answer --help; make targets exist (`make -n`). The commands themselves run in the other tests."""
    words = command.split()
    if words[0] == "make":
        proc = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return
    module, args = words[2], [w for w in words[3:] if w != "--multirun"]
    stage = importlib.import_module(module)
    source = inspect.getsource(stage)
    if "@hydra.main" not in source:  # an argparse command
        with pytest.raises(SystemExit) as done:
            stage.main(["--help"])
        assert done.value.code == 0 and "usage:" in capsys.readouterr().out
        return
    config_name = re.search(r'config_name="(\w+)"', source).group(1)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=args)
    assert "paths" in cfg
