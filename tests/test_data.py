import gzip
import shutil

import pytest
import torch

from fmnist.core.data import RAW_MD5, DataError, load_splits, read_raw
from fmnist.core.errors import ConfigError
from tests.helpers import DEBIAN_DIR, compose_cfg


def test_real_data_splits(tmp_path, data_root):
    cfg = compose_cfg(tmp_path, ["data.subset=6000", "data.val_size=1000"]).data
    s = load_splits(cfg)
    assert s.train_x.shape == (5000, 1, 28, 28) and s.val_x.shape == (1000, 1, 28, 28)
    assert s.test_x.shape == (10000, 1, 28, 28) and s.test_y.dtype == torch.int64
    assert set(s.train_y.unique().tolist()) == set(range(10))  # all ten classes present
    assert abs(s.train_x.mean().item()) < 0.1 and abs(s.train_x.std().item() - 1) < 0.1  # normalized once
    again = load_splits(compose_cfg(tmp_path, ["data.subset=6000", "data.val_size=1000", "trainer.seed=7"]).data)
    assert torch.equal(s.val_x, again.val_x)  # the held-out images do not depend on the training seed


def test_full_training_file_is_the_real_fashion_mnist(data_root):
    (train_x, train_y), (test_x, test_y) = read_raw(data_root, download=False)
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert torch.bincount(train_y).tolist() == [6000] * 10 and torch.bincount(test_y).tolist() == [1000] * 10


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"has no Fashion-MNIST files: install dataset-fashion-mnist"):
        read_raw(tmp_path, system_dir=None, download=False)


def _copy_gz(dst):
    dst.mkdir(parents=True, exist_ok=True)
    for name in RAW_MD5:
        shutil.copyfile(DEBIAN_DIR / f"{name}.gz", dst / f"{name}.gz")


def test_gz_in_root_is_unpacked_and_checked(tmp_path):
    _copy_gz(tmp_path)
    (train_x, _), _ = read_raw(tmp_path, system_dir=None, download=False)
    assert train_x.shape == (60000, 28, 28)
    assert (tmp_path / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte").is_file()


def test_parallel_jobs_stage_one_fresh_folder(tmp_path):
    # the jobs of a parallel sweep (joblib, two workers) may all find the data folder empty and unpack at once
    from concurrent.futures import ProcessPoolExecutor

    from fmnist.core.data import _stage

    with ProcessPoolExecutor(3) as pool:
        staged = list(pool.map(_stage, [tmp_path] * 3, [str(DEBIAN_DIR)] * 3))
    assert staged == [True] * 3
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(RAW_MD5)  # the four files, no temp file left over


def test_truncated_gz_is_reported(tmp_path):
    _copy_gz(tmp_path)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100_000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is corrupt"):
        read_raw(tmp_path, system_dir=None, download=False)


def test_altered_data_fails_md5(tmp_path):
    _copy_gz(tmp_path)
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(gz.read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one wrong label: still a valid gzip and IDX file
    gz.write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz is corrupt \(its data fails the md5 check\)"):
        read_raw(tmp_path, system_dir=None, download=False)


def test_damaged_unpacked_file_is_reported(tmp_path, data_root):
    raw = tmp_path / "FashionMNIST" / "raw"
    shutil.copytree(data_root / "FashionMNIST" / "raw", raw)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is corrupt \(md5 mismatch\): delete it"):
        read_raw(tmp_path, system_dir=None, download=False)


def test_val_size_must_fit_subset(tmp_path, data_root):
    cfg = compose_cfg(tmp_path, ["data.subset=500", "data.val_size=1000"]).data
    with pytest.raises(ConfigError, match="data.val_size=1000"):
        load_splits(cfg)
