"""Full MNIST, 10 classes: ``mnist_splits`` and ``load_dataset("mnist")`` on the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intervalnn.datasets import MNIST_MD5, DataError, load_dataset, load_idx, mnist17_splits
from intervalnn.datasets.mnist import mnist_splits

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_BASES = list(MNIST_MD5)

needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / b).is_file() or (MNIST_DIR / (b + ".gz")).is_file() for b in MNIST_BASES),
    reason=f"real MNIST IDX files not found in {MNIST_DIR}",
)


def _raw(base):
    p = MNIST_DIR / base
    return load_idx(p if p.is_file() else MNIST_DIR / (base + ".gz"))


@pytest.fixture(scope="module")
def mnist10():
    return mnist_splits(MNIST_DIR, seed=0)


@needs_mnist
def test_mnist10_sizes_classes_pixels(mnist10):
    s = mnist10
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    assert s.pretrain is None and s.domain == (0.0, 1.0) and s.name == "mnist"
    assert s.num_classes == 10 and s.num_features == 784
    for ds in (s.train, s.val, s.test):
        assert ds.num_classes == 10 and ds.x.dtype == np.float64
        assert ds.x.min() == 0.0 and ds.x.max() == 1.0
        assert set(np.unique(ds.y)) == set(range(10))
    te_img, te_lab = _raw("t10k-images-idx3-ubyte"), _raw("t10k-labels-idx1-ubyte")
    # labels are the digits themselves; pixels x / 255, row-major, test set in file order
    np.testing.assert_array_equal(s.test.y, te_lab.astype(np.int64))
    np.testing.assert_array_equal(s.test.x, te_img.reshape(-1, 784) / 255.0)
    tr_lab = _raw("train-labels-idx1-ubyte")
    counts = s.train.class_counts() + s.val.class_counts()
    np.testing.assert_array_equal(counts, np.bincount(tr_lab, minlength=10))


@needs_mnist
def test_mnist10_splits_partition_training_file():
    s = mnist_splits(MNIST_DIR, seed=3, n_val=1000, n_pretrain=500, verify=False)
    assert (len(s.train), len(s.val), len(s.pretrain)) == (58500, 1000, 500)
    tr_img, tr_lab = _raw("train-images-idx3-ubyte"), _raw("train-labels-idx1-ubyte")
    both = np.concatenate([s.train.x, s.val.x, s.pretrain.x])
    ys = np.concatenate([s.train.y, s.val.y, s.pretrain.y])
    # the three splits are exactly the 60,000 training images with their labels
    got = np.column_stack([np.rint(both * 255).astype(np.uint8), ys.astype(np.uint8)])
    want = np.column_stack([tr_img.reshape(-1, 784), tr_lab])
    assert sorted(r.tobytes() for r in got) == sorted(r.tobytes() for r in want)
    # seeded: the same seed gives the same validation set, another seed another one
    again = mnist_splits(MNIST_DIR, seed=3, n_val=1000, n_pretrain=500, verify=False)
    assert again.val.fingerprint() == s.val.fingerprint()
    assert mnist_splits(MNIST_DIR, seed=4, n_val=1000, verify=False).val.fingerprint() != (
        s.val.fingerprint()
    )
    with pytest.raises(ValueError, match="n_val"):
        mnist_splits(MNIST_DIR, n_val=60000, verify=False)
    with pytest.raises(ValueError, match="n_pretrain"):
        mnist_splits(MNIST_DIR, n_pretrain=-1, verify=False)


@needs_mnist
def test_mnist10_through_load_dataset_and_mnist17_unchanged(mnist10, monkeypatch):
    for name in ("mnist", "mnist10", "MNIST-10"):
        s = load_dataset(name, data_dir=MNIST_DIR)
        assert s.name == "mnist" and s.val.fingerprint() == mnist10.val.fingerprint()
    monkeypatch.setenv("INTERVALNN_MNIST_DIR", str(MNIST_DIR))
    assert load_dataset("mnist", n_val=100).val.num_classes == 10
    # the 1-vs-7 set is the 10-class loader's 1s and 7s, relabelled 0 and 1
    m17 = mnist17_splits(MNIST_DIR, seed=0)
    keep = np.isin(mnist10.test.y, (1, 7))
    np.testing.assert_array_equal(m17.test.x, mnist10.test.x[keep])
    np.testing.assert_array_equal(m17.test.y, (mnist10.test.y[keep] == 7).astype(np.int64))
    assert (len(m17.train), len(m17.val), len(m17.test)) == (11007, 2000, 2163)


def test_mnist10_missing_data_messages(tmp_path):
    with pytest.raises(DataError, match="mnist needs data_dir"):
        mnist_splits(None)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist10", data_dir=tmp_path / "absent")
    with pytest.raises(DataError, match="missing") as exc:
        mnist_splits(tmp_path)
    assert "torchvision" in str(exc.value)
