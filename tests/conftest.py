"""Fixtures only; the helpers tests share live in tests/helpers.py."""

from pathlib import Path

import pytest

from tests.helpers import DEBIAN_DIR, REPO


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The repo's data folder, filled from Debian's package (as `make` and CI install it) on first use."""
    from fmnist.core.data import read_raw

    root = REPO / "data"
    read_raw(root, str(DEBIAN_DIR), download=False)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_root) -> Path:
    """A medium model trained 2 epochs on 2 500 real images: the checkpoint prune and bench tests start from."""
    from fmnist.training.run import train
    from tests.helpers import small_cfg

    out = tmp_path_factory.mktemp("to_prune")
    train(small_cfg(out, "trainer.max_epochs=2", "data.subset=3000", "data.val_size=500"))
    return out
