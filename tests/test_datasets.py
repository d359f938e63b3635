"""Data sets: two moons, IDX/MNIST 1-vs-7 on the real files, user .npz validation."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from intervalnn.datasets import (
    MNIST_MD5,
    DataError,
    Dataset,
    Splits,
    load_dataset,
    load_idx,
    load_npz,
    mnist17_splits,
    two_moons,
    two_moons_splits,
)

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_BASES = list(MNIST_MD5)


# ------------------------------------------------------------------ containers


def test_dataset_validates_and_is_immutable():
    ds = Dataset(np.zeros((3, 2)), np.array([0, 1, 1], dtype=np.int32), 2, "t")
    assert ds.y.dtype == np.int64 and len(ds) == 3 and ds.num_features == 2
    assert list(ds.class_counts()) == [1, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.x = np.ones((3, 2))
    with pytest.raises(ValueError):
        ds.x[0, 0] = 1.0  # read-only view
    with pytest.raises(DataError):
        Dataset(np.zeros((3, 2)), np.array([0, 1, 2]), 2)  # label out of range
    with pytest.raises(DataError):
        Dataset(np.zeros((3, 2)), np.array([0, 1]), 2)  # length mismatch
    with pytest.raises(DataError):
        Dataset(np.zeros(3), np.array([0, 1, 0]), 2)  # not 2-D
    with pytest.raises(DataError):
        Dataset(np.zeros((2, 2)), np.array([0.0, 1.0]), 2)  # float labels


def test_fingerprint_tracks_dtype_shape_and_bytes():
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.array([0, 1, 0])
    fp = Dataset(x, y, 2).fingerprint()
    assert len(fp) == 64 and fp == Dataset(x.copy(), y.copy(), 2, "other name").fingerprint()
    x2 = x.copy()
    x2[2, 1] = np.nextafter(x2[2, 1], np.inf)
    assert Dataset(x2, y, 2).fingerprint() != fp
    assert Dataset(x.astype(np.float32), y, 2).fingerprint() != fp
    assert (
        Dataset(x.reshape(2, 3), y[:2], 2).fingerprint() != Dataset(x[:2], y[:2], 2).fingerprint()
    )
    assert Dataset(x, np.array([0, 1, 1]), 2).fingerprint() != fp


def test_splits_checks_consistency():
    a = Dataset(np.zeros((2, 2)), np.array([0, 1]), 2)
    b = Dataset(np.zeros((2, 3)), np.array([0, 1]), 2)
    with pytest.raises(DataError):
        Splits(a, a, b)
    with pytest.raises(DataError):
        Splits(a, a, a, domain=(1.0, 0.0))
    s = Splits(a, a, a, domain=(0, 1))
    assert s.domain == (0.0, 1.0) and s.pretrain is None and s.num_classes == 2


# ------------------------------------------------------------------ two moons


def _arc_points(n):
    n_out = n // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], axis=1)
    return outer, inner


def _sorted_rows(a):
    return a[np.lexsort(a.T[::-1])]


@pytest.mark.parametrize("n", [1, 2, 7, 100, 101])
def test_two_moons_shape_labels_balance(n):
    ds = two_moons(n, seed=3)
    assert ds.x.shape == (n, 2) and ds.x.dtype == np.float64
    assert ds.y.shape == (n,) and ds.y.dtype == np.int64 and ds.num_classes == 2
    assert list(ds.class_counts()) == [n // 2, n - n // 2]


def test_two_moons_noise_free_points_lie_exactly_on_the_arcs():
    n = 301
    ds = two_moons(n, noise=0.0, seed=5)
    outer, inner = _arc_points(n)
    np.testing.assert_array_equal(_sorted_rows(ds.x[ds.y == 0]), _sorted_rows(outer))
    np.testing.assert_array_equal(_sorted_rows(ds.x[ds.y == 1]), _sorted_rows(inner))
    # shuffled: labels are not in generation order
    assert not np.array_equal(ds.y, np.sort(ds.y))


def test_two_moons_noise_matches_gaussian_expectation():
    sigma, n = 0.1, 20000
    ds = two_moons(n, noise=sigma, seed=11)
    centres = np.array([[0.0, 0.0], [1.0, 0.5]])
    r = np.linalg.norm(ds.x - centres[ds.y], axis=1)
    # distance to the own circle ~ |N(0, sigma^2)| (plus O(sigma^2) curvature terms)
    mean_dist = np.abs(r - 1.0).mean()
    assert mean_dist == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.08)
    # residual from the noise-free positions: iid N(0, sigma^2) per coordinate
    clean = two_moons(n, noise=0.0, seed=11)  # same seed -> same permutation
    resid = ds.x - clean.x
    assert np.array_equal(ds.y, clean.y)
    assert resid.mean() == pytest.approx(0.0, abs=0.005)
    assert resid.std(axis=0) == pytest.approx([sigma, sigma], rel=0.03)
    assert abs(np.corrcoef(resid.T)[0, 1]) < 0.03


def test_two_moons_seed_determinism_and_split_independence():
    assert two_moons(50, seed=1).fingerprint() == two_moons(50, seed=1).fingerprint()
    assert two_moons(50, seed=1).fingerprint() != two_moons(50, seed=2).fingerprint()
    a = two_moons_splits(seed=4)
    b = two_moons_splits(seed=4, n_val=50, n_pretrain=30)
    assert a.train.fingerprint() == b.train.fingerprint()
    assert a.test.fingerprint() == b.test.fingerprint()
    assert len(b.val) == 50 and len(b.pretrain) == 30 and a.pretrain is None
    assert len({a.train.fingerprint(), a.val.fingerprint(), a.test.fingerprint()}) == 3
    assert a.domain is None and (len(a.train), len(a.val), len(a.test)) == (1000, 200, 200)
    assert two_moons_splits(seed=5).train.fingerprint() != a.train.fingerprint()
    with pytest.raises(ValueError):
        two_moons(10, noise=-1)


# ------------------------------------------------------------------ IDX reader


def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x800 | arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


@pytest.fixture
def small_idx():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8), np.array([3, 1, 4, 1, 5], np.uint8)


def test_load_idx_raw_and_gzip(tmp_path, small_idx):
    imgs, labs = small_idx
    (tmp_path / "img").write_bytes(_idx_bytes(imgs))
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx_bytes(imgs)))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(_idx_bytes(labs)))
    (tmp_path / "lab_no_suffix").write_bytes(gzip.compress(_idx_bytes(labs)))  # magic, not name
    for name in ("img", "img.gz"):
        out = load_idx(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (5, 3, 4)
        np.testing.assert_array_equal(out, imgs)
    for name in ("lab.gz", "lab_no_suffix"):
        np.testing.assert_array_equal(load_idx(tmp_path / name), labs)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b"\x00\x00\x08\x02" + b[4:], "magic"),  # 2-D ubyte: not labels/images
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "magic"),  # float type code
        (lambda b: b[:-1], "dimensions"),  # truncated data
        (lambda b: b + b"\x00", "dimensions"),  # trailing data
        (lambda b: b[:10], "header"),  # truncated header
        (lambda b: b[:2], "short"),
    ],
)
def test_load_idx_rejects_bad_files(tmp_path, small_idx, mutate, match):
    raw = mutate(_idx_bytes(small_idx[0]))
    for name, data in (("f", raw), ("f.gz", gzip.compress(raw))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=match):
            load_idx(tmp_path / name)


def test_load_idx_truncated_gzip_and_missing(tmp_path, small_idx):
    gz = gzip.compress(_idx_bytes(small_idx[0]))
    (tmp_path / "t.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="gzip"):
        load_idx(tmp_path / "t.gz")
    with pytest.raises(DataError, match="not found"):
        load_idx(tmp_path / "nope")


# ------------------------------------------------------------------ MNIST 1 vs 7

needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / b).is_file() or (MNIST_DIR / (b + ".gz")).is_file() for b in MNIST_BASES),
    reason=f"real MNIST IDX files not found in {MNIST_DIR}",
)


def _mnist_path(base):
    p = MNIST_DIR / base
    return p if p.is_file() else MNIST_DIR / (base + ".gz")


@pytest.fixture(scope="module")
def mnist():
    return mnist17_splits(MNIST_DIR, seed=0)


@pytest.fixture(scope="module")
def mnist_raw():
    return {b: load_idx(_mnist_path(b)) for b in MNIST_BASES}


def _row_multiset(a):
    a = np.ascontiguousarray(a)
    return np.sort(a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel())


@needs_mnist
def test_mnist17_counts_labels_range(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (11007, 2000, 2163)
    assert mnist.pretrain is None and mnist.domain == (0.0, 1.0) and mnist.name == "mnist17"
    for ds in (mnist.train, mnist.val, mnist.test):
        assert ds.x.shape[1] == 784 and ds.x.dtype == np.float64 and ds.num_classes == 2
        assert set(np.unique(ds.y)) == {0, 1}
        assert ds.x.min() == 0.0 and ds.x.max() == 1.0


@needs_mnist
def test_mnist17_really_digits_1_and_7(mnist, mnist_raw):
    tr_lab, te_lab = mnist_raw["train-labels-idx1-ubyte"], mnist_raw["t10k-labels-idx1-ubyte"]
    tr_img, te_img = mnist_raw["train-images-idx3-ubyte"], mnist_raw["t10k-images-idx3-ubyte"]
    assert tr_lab.shape == (60000,) and te_img.shape == (10000, 28, 28)
    n1, n7 = int((tr_lab == 1).sum()), int((tr_lab == 7).sum())
    assert n1 + n7 == 13007
    counts = mnist.train.class_counts() + mnist.val.class_counts()
    assert list(counts) == [n1, n7]  # class 0 = digit 1, class 1 = digit 7
    assert list(mnist.test.class_counts()) == [(te_lab == 1).sum(), (te_lab == 7).sum()]
    # test set in file order, pixels exactly k / 255
    keep = np.isin(te_lab, [1, 7])
    np.testing.assert_array_equal(mnist.test.y, (te_lab[keep] == 7).astype(np.int64))
    np.testing.assert_array_equal(mnist.test.x, te_img[keep].reshape(-1, 784) / 255.0)
    np.testing.assert_array_equal(np.rint(mnist.test.x * 255), te_img[keep].reshape(-1, 784))
    # train + val is a partition of the 1/7 training images, with matching labels
    keep = np.isin(tr_lab, [1, 7])
    want = np.concatenate([tr_img[keep].reshape(-1, 784), tr_lab[keep, None]], axis=1)
    got = np.concatenate(
        [
            np.rint(np.concatenate([mnist.train.x, mnist.val.x]) * 255).astype(np.uint8),
            np.where(np.concatenate([mnist.train.y, mnist.val.y]) == 1, 7, 1)[:, None],
        ],
        axis=1,
    ).astype(np.uint8)
    np.testing.assert_array_equal(_row_multiset(got), _row_multiset(want))


@needs_mnist
def test_mnist17_seed_and_pretrain(mnist):
    other = mnist17_splits(MNIST_DIR, seed=1, n_val=1000, n_pretrain=500, verify=False)
    assert (len(other.train), len(other.val), len(other.pretrain)) == (11507, 1000, 500)
    assert other.test.fingerprint() == mnist.test.fingerprint()
    assert other.val.fingerprint() != mnist.val.fingerprint()
    parts = np.concatenate([other.train.x, other.val.x, other.pretrain.x])
    whole = np.concatenate([mnist.train.x, mnist.val.x])
    assert _row_multiset(parts).tobytes() == _row_multiset(whole).tobytes()
    assert mnist17_splits(MNIST_DIR, seed=0).val.fingerprint() == mnist.val.fingerprint()
    with pytest.raises(ValueError):
        mnist17_splits(MNIST_DIR, n_val=13007)


@needs_mnist
def test_mnist17_md5_mismatch_detected(tmp_path):
    for b in MNIST_BASES:
        src = _mnist_path(b)
        if b == "train-labels-idx1-ubyte":
            original = (
                gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
            )
            assert hashlib.md5(original).hexdigest() == MNIST_MD5[b]
            assert original[8] == 5  # the first training label
            raw = bytearray(original)
            raw[8] = 7  # flip one byte: a 5 becomes a 7, still a well-formed IDX file
            (tmp_path / b).write_bytes(bytes(raw))  # uncompressed copy
        else:
            (tmp_path / src.name).symlink_to(src)
    with pytest.raises(DataError) as exc:
        mnist17_splits(tmp_path)
    msg = str(exc.value)
    assert "train-labels-idx1-ubyte" in msg and MNIST_MD5["train-labels-idx1-ubyte"] in msg
    assert hashlib.md5(bytes(raw)).hexdigest() in msg
    # verify=False accepts the modified (still well-formed) file
    s = mnist17_splits(tmp_path, verify=False)
    assert len(s.train) + len(s.val) == 13008


def test_mnist17_missing_files_message(tmp_path):
    with pytest.raises(DataError) as exc:
        mnist17_splits(tmp_path)
    msg = str(exc.value)
    for b in MNIST_BASES:
        assert b in msg
    assert "gz" in msg and "torchvision" in msg
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as exc:
        mnist17_splits(tmp_path)
    assert "missing" in str(exc.value) and "train-labels-idx1-ubyte[.gz]," in str(exc.value)
    with pytest.raises(DataError, match="does not exist"):
        mnist17_splits(tmp_path / "absent")
    with pytest.raises(DataError, match="data_dir"):
        mnist17_splits(None)


# ------------------------------------------------------------------ user .npz

_UNPICKLED: list[str] = []


def _record(tag):
    _UNPICKLED.append(tag)
    return tag


class _Trap:
    def __reduce__(self):
        return (_record, ("unpickled!",))


def _xy(n=100, d=3, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % k


def test_npz_default_split_70_15_15(tmp_path, npz):
    x, y = _xy()
    p = npz(x=x, y=y)
    s = load_npz(p, seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (70, 15, 15)
    assert s.num_classes == 3 and s.domain is None and s.name == "d" and s.pretrain is None
    assert load_npz(p, seed=3).val.fingerprint() == s.val.fingerprint()
    assert load_npz(p, seed=4).val.fingerprint() != s.val.fingerprint()
    both = np.concatenate([s.train.x, s.val.x, s.test.x])
    assert _row_multiset(both).tobytes() == _row_multiset(x).tobytes()
    s2 = load_npz(p, n_val=10, n_test=20, n_pretrain=5)
    assert (len(s2.train), len(s2.val), len(s2.test), len(s2.pretrain)) == (65, 10, 20, 5)


def test_npz_flattens_converts_and_domain(tmp_path, npz):
    x = np.random.default_rng(1).integers(0, 256, size=(40, 2, 3), dtype=np.uint8)
    y = np.arange(40, dtype=np.uint8) % 2
    s = load_npz(npz(x=x, y=y.astype(float), domain=np.array([0.0, 255.0])))
    assert s.train.x.shape[1] == 6 and s.train.x.dtype == np.float64 and s.domain == (0.0, 255.0)
    with pytest.raises(DataError, match="domain"):
        load_npz(npz("o.npz", x=x, y=y, domain=np.array([0.0, 100.0])))
    with pytest.raises(DataError, match="domain"):
        load_npz(npz("b.npz", x=x, y=y, domain=np.array([1.0])))


def test_npz_predefined_splits(tmp_path, npz):
    x, y = _xy(60, k=2)
    p = npz(x_train=x[:40], y_train=y[:40], x_val=x[40:50], y_val=y[40:50],
             x_test=x[50:], y_test=y[50:])  # fmt: skip
    s = load_npz(p)
    np.testing.assert_array_equal(s.train.x, x[:40])
    np.testing.assert_array_equal(s.val.y, y[40:50])
    np.testing.assert_array_equal(s.test.x, x[50:])
    p2 = npz("nv.npz", x_train=x[:40], y_train=y[:40], x_test=x[50:], y_test=y[50:])
    s2 = load_npz(p2, n_val=8)
    assert (len(s2.train), len(s2.val), len(s2.test)) == (32, 8, 10)
    p3 = npz("bad.npz", x_train=x[:40], y_train=y[:40], x_val=x[40:50])
    with pytest.raises(DataError, match="missing"):
        load_npz(p3)
    p4 = npz("dim.npz", x_train=x[:40], y_train=y[:40], x_test=x[50:, :2],
              y_test=y[50:])  # fmt: skip
    with pytest.raises(DataError, match="features"):
        load_npz(p4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_non_finite_names_first_bad_row(tmp_path, bad, npz):
    x, y = _xy()
    x[17, 1] = bad
    x[42, 0] = bad
    with pytest.raises(DataError, match="row 17"):
        load_npz(npz(x=x, y=y))


@pytest.mark.parametrize(
    "y, match",
    [
        (np.r_[np.zeros(50, int), -np.ones(50, int)], "negative"),
        (np.r_[np.zeros(50), np.full(50, 0.5)], "non-integer"),
        (np.r_[np.zeros(50), np.full(50, np.nan)], "non-integer"),
        (np.zeros(100, int), "at least 2 classes"),
        (np.array(["a", "b"] * 50), "integers"),
        (np.zeros(99, int), "labels"),
        (np.zeros((100, 2), int), "shape"),
    ],
)
def test_npz_bad_labels(tmp_path, y, match, npz):
    x, _ = _xy()
    with pytest.raises(DataError, match=match):
        load_npz(npz(x=x, y=y))


def test_npz_num_classes_key_bounds_labels(tmp_path, npz):
    x, y = _xy(k=3)
    with pytest.raises(DataError, match="out of range"):
        load_npz(npz(x=x, y=y, num_classes=np.array(2)))
    assert load_npz(npz("k.npz", x=x, y=y, num_classes=np.array(5))).num_classes == 5


def test_npz_shape_and_content_errors(tmp_path, npz):
    x, y = _xy()
    with pytest.raises(DataError, match="shape"):
        load_npz(npz("1d.npz", x=x[:, 0], y=y))
    with pytest.raises(DataError, match="no examples"):
        load_npz(npz("e.npz", x=np.zeros((0, 3)), y=np.zeros(0, int)))
    with pytest.raises(DataError, match="missing y"):
        load_npz(npz("noy.npz", x=x))
    with pytest.raises(DataError, match="real numbers"):
        load_npz(npz("c.npz", x=x + 1j, y=y))
    with pytest.raises(DataError, match="cannot be split"):
        load_npz(npz("small.npz", x=x[:3], y=y[:3]))
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(DataError):
        load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", x)
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match="npz"):
        load_npz(tmp_path / "single.npz")
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "absent.npz")


def test_npz_object_array_is_refused_not_unpickled(tmp_path):
    x, y = _xy()
    trap = np.empty(100, dtype=object)
    trap[:] = [_Trap() for _ in range(100)]
    _UNPICKLED.clear()
    for name, arrays in (("ox.npz", {"x": x, "y": trap}), ("ex.npz", {"x": x, "y": y, "z": trap})):
        p = tmp_path / name
        np.savez(p, **arrays)  # np.save pickles object arrays
        with pytest.raises(DataError, match="unpickling"):
            load_npz(p)
    assert _UNPICKLED == []


# ------------------------------------------------------------------ dispatch


def test_load_dataset_dispatch(tmp_path, monkeypatch, npz):
    assert load_dataset("moons", seed=2).train.fingerprint() == (
        two_moons_splits(seed=2).train.fingerprint()
    )
    assert len(load_dataset("MOONS", n_train=10).train) == 10
    x, y = _xy()
    p = npz(x=x, y=y)
    assert load_dataset(p, seed=1).val.fingerprint() == load_npz(p, seed=1).val.fingerprint()
    assert len(load_dataset(str(p), n_test=30).test) == 30
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    monkeypatch.delenv("INTERVALNN_MNIST_DIR", raising=False)
    with pytest.raises(DataError, match="data_dir"):
        load_dataset("mnist17")
    monkeypatch.setenv("INTERVALNN_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist17")


@needs_mnist
def test_load_dataset_mnist17(mnist):
    s = load_dataset("mnist17", data_dir=MNIST_DIR, verify=False)
    assert s.train.fingerprint() == mnist.train.fingerprint()
