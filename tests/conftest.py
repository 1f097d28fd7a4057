"""Fixtures only; the helpers tests share live in tests/helpers.py."""

from pathlib import Path

import pytest

from tests.helpers import DEBIAN_DIR, REPO


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The repo's data folder, filled from Debian's package (as `make` and CI install it) on first use."""
    from fmnist.data import read_raw

    root = REPO / "data"
    read_raw(root, str(DEBIAN_DIR), download=False)
    return root
