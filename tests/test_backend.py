"""Backend dispatch: NumPy by default, CuPy only when asked, never both at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import intervalnn as inn
from intervalnn import Interval
from intervalnn.backend import backend_of, get_backend, is_cupy_array
from intervalnn.kernels import cpu


class FakeCupyArray:
    """Looks like a CuPy array to a type test (its class lives in a ``cupy`` module)."""

    shape = (2,)
    dtype = np.dtype(np.float64)


FakeCupyArray.__module__ = "cupy._core.core"
FakeCupyArray.__qualname__ = FakeCupyArray.__name__ = "ndarray"


def test_numpy_arrays_give_numpy_backend():
    x = np.zeros(3)
    for values in [(x,), (x, 1.0), (np.float32(1),), (x, None, 2)]:
        bk = backend_of(*values)
        assert bk.name == "numpy" and bk.xp is np and bk.kernels is cpu
    assert backend_of().name == "numpy" and backend_of(1.0, 2).name == "numpy"
    assert get_backend("numpy").kernels is cpu and get_backend("cpu").xp is np
    iv = Interval(np.zeros(2), np.ones(2))
    assert iv.backend.name == "numpy" and isinstance((iv + iv).lo, np.ndarray)
    assert iv.to_numpy() is iv


def test_fake_cupy_is_recognised_without_importing_cupy():
    assert is_cupy_array(FakeCupyArray()) and not is_cupy_array(np.zeros(1))
    assert "cupy" not in sys.modules or sys.modules["cupy"] is not None


def test_mixing_numpy_and_cupy_raises_type_error():
    with pytest.raises(TypeError, match="cannot mix NumPy and CuPy"):
        backend_of(np.zeros(2), FakeCupyArray())
    with pytest.raises(TypeError, match="cannot mix"):
        backend_of(FakeCupyArray(), 1.0, np.float64(2))
    with pytest.raises(TypeError, match="cannot mix"):
        Interval(np.zeros(2), FakeCupyArray())
    iv = Interval(np.zeros(2), np.ones(2))
    with pytest.raises(TypeError, match="cannot mix"):
        iv + FakeCupyArray()
    with pytest.raises(TypeError, match="cannot mix"):
        iv.contains(FakeCupyArray())


def test_gpu_backend_without_cupy_raises_clear_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    for name in ("gpu", "cupy"):
        with pytest.raises(RuntimeError, match="CuPy"):
            get_backend(name)
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("tpu")


def test_import_and_numpy_use_do_not_import_cupy():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import intervalnn as inn
        assert "cupy" not in sys.modules, "import intervalnn imported cupy"
        x = inn.Interval(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
        y = (x * 3 - x / 2 + inn.sqrt(x)) @ inn.Interval(np.ones((2, 2)))
        y.sum(); y.mean(axis=0); repr(y); inn.relu(y); x.mid; x.astype(np.float32)
        assert "cupy" not in sys.modules, "using intervalnn on NumPy arrays imported cupy"
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_subnormals_are_not_flushed(dt):
    eta = np.finfo(dt).smallest_subnormal
    x = Interval(np.array([eta], dtype=dt))
    s = x + x
    assert s.lo[0] == 2 * eta and s.hi[0] == 2 * eta
    d = x - Interval(np.array([2 * eta], dtype=dt))
    assert d.lo[0] == -eta and d.hi[0] == -eta
    h = x * Interval(np.array([0.5], dtype=dt))  # exact value eta/2: between 0 and eta
    assert h.lo[0] == 0 and h.hi[0] == eta
    q = x / Interval(np.array([3.0], dtype=dt))
    assert q.lo[0] == 0 and q.hi[0] == eta
    m = x * Interval(np.array([3.0], dtype=dt))
    assert m.lo[0] == 3 * eta and m.hi[0] == 3 * eta
    small = np.finfo(dt).smallest_normal
    t = Interval(np.array([small], dtype=dt)) * Interval(np.array([0.25], dtype=dt))
    assert t.lo[0] == t.hi[0] == small / 4 and t.lo[0] > 0  # subnormal, exact
    # the point kernels too
    e = np.array([eta], dtype=dt)
    assert cpu.add_rd(e, e)[0] == 2 * eta and cpu.mul_ru(e, np.array([0.5], dtype=dt))[0] == eta
    assert cpu.div_rd(e, np.array([0.5], dtype=dt))[0] == 2 * eta


def test_subnormal_float64_5e_324():
    x = Interval(np.array([5e-324]))
    y = x + x
    assert y.lo[0] == 1e-323 and y.hi[0] == 1e-323
    z = inn.sqrt(x)  # sqrt(2**-1074) = 2**-537 exactly
    assert z.lo[0] == z.hi[0] == 2.0**-537
