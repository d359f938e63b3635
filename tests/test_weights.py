"""PyTorch-layout weights in and the nominal model out (issue 14, item 4): intervalnn.weights
and ``intervalnn export``.

The fixtures in ``tests/fixtures`` were made once with torch
(``make_torch_fixture.py``): a small CNN and an MLP as ``torch.nn.Sequential`` in
float64, their ``state_dict`` as ``.safetensors`` and ``.npz``, a few inputs and
torch's outputs.  Only the tests marked by ``importorskip("torch")`` need torch.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from intervalnn.interval import Interval
from intervalnn.io import load_model, save_model
from intervalnn.layers import Linear, ReLU, Sequential, mlp
from intervalnn.threat import ThreatModel
from intervalnn.weights import load_weights, read_state_dict, save_weights

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SUFFIXES = (".safetensors", ".npz")


def build(name: str, dtype=np.float64, seed: int = 0) -> Sequential:
    """Our model equivalent to the fixture's torch model ``name`` (random weights)."""
    rng = np.random.default_rng(seed)
    kw = {"rng": rng, "dtype": dtype}
    if name == "mlp":  # linear(6)-relu-linear(3) on 4 features
        return Sequential(Linear(4, 6, **kw), ReLU(), Linear(6, 3, **kw))
    from intervalnn.layers import AvgPool2d, Conv2d, Flatten, MaxPool2d, Unflatten

    # unflatten(2,10,10)-conv(3,3,stride=2,padding=1)-relu-maxpool(2,stride=1)
    # -conv(4,2,padding=1)-relu-avgpool(2)-flatten-linear(5)-relu-linear(3)
    return Sequential(
        Unflatten((2, 10, 10)),
        Conv2d(2, 3, 3, stride=2, padding=1, **kw),
        ReLU(),
        MaxPool2d(2, stride=1),
        Conv2d(3, 4, 2, padding=1, **kw),
        ReLU(),
        AvgPool2d(2),
        Flatten(),
        Linear(16, 5, **kw),
        ReLU(),
        Linear(5, 3, **kw),
    )


def fixture_io(name: str):
    with np.load(FIXTURES / f"torch_{name}_io.npz", allow_pickle=False) as f:
        return f["x"], f["y"]


def host(a):
    return np.asarray(a.get() if hasattr(a, "get") else a)


def snapshot(model: Sequential) -> dict:
    """Copies of every nominal parameter and box bound, by name."""
    out = {f"nominal/{k}": host(v).copy() for k, v in model.named_nominal().items()}
    for k, box in model.named_params().items():
        out[f"lo/{k}"], out[f"hi/{k}"] = host(box.lo).copy(), host(box.hi).copy()
    return out


def torch_layout(model: Sequential) -> dict:
    """The nominal model in PyTorch's layout (Linear weights transposed), by name."""
    out = {}
    for i, layer in enumerate(model.layers):
        for k, v in getattr(layer, "nominal", {}).items():
            v = host(v)
            out[f"{i}.{k}"] = v.T if isinstance(layer, Linear) and k == "weight" else v
    return out


NAMES = ["mlp", "cnn"]

#: The fixtures' architectures as strings (intervalnn.architecture) and their input sizes.
ARCHITECTURES = {
    "mlp": ("linear(6)-relu-linear(3)", 4),
    "cnn": (
        "unflatten(2,10,10)-conv(3,3,stride=2,padding=1)-relu-maxpool(2,stride=1)"
        "-conv(4,2,padding=1)-relu-avgpool(2)-flatten-linear(5)-relu-linear(3)",
        200,
    ),
}


# --------------------------------------------------------------- torch's outputs


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_loaded_fixture_gives_torchs_outputs(name, suffix):
    model = build(name)
    load_weights(model, FIXTURES / f"torch_{name}{suffix}")
    x, y = fixture_io(name)
    # the nominal model: a float evaluation as torch's, up to the order of the sums
    np.testing.assert_allclose(model.forward_nominal(x), y, rtol=1e-13, atol=1e-14)
    # the interval model at the point box and the point inputs contains torch's float64
    # evaluation (itself a float evaluation of the same real function)
    out = model.forward(Interval(x))
    assert bool(out.contains(y).all())
    assert float((out.hi - out.lo).max()) < 1e-12  # and is tight


@pytest.mark.parametrize("name", NAMES)
def test_the_architecture_string_builds_the_model_the_fixture_loads_into(name):
    from intervalnn.architecture import build as build_architecture
    from intervalnn.architecture import canonical, describe

    text, in_features = ARCHITECTURES[name]
    assert describe(build(name)) == canonical(text)
    frozen = len(build(name).layers) - 3  # everything but the head linear-relu-linear
    model = build_architecture(text, in_features, seed=7, frozen=frozen)
    load_weights(model, FIXTURES / f"torch_{name}.safetensors")
    x, y = fixture_io(name)
    np.testing.assert_allclose(model.forward_nominal(x), y, rtol=1e-13, atol=1e-14)
    assert bool(model.forward(Interval(x)).contains(y).all())
    state = read_state_dict(FIXTURES / f"torch_{name}.safetensors")
    for key, value in torch_layout(model).items():  # frozen or not, every layer is loaded
        np.testing.assert_array_equal(value, state[key])


@pytest.mark.parametrize("name", NAMES)
def test_loading_makes_the_box_the_point_at_the_nominal(name):
    model = build(name)
    state = read_state_dict(FIXTURES / f"torch_{name}.safetensors")
    load_weights(model, FIXTURES / f"torch_{name}.safetensors")
    assert torch_layout(model).keys() == state.keys()
    for key, value in torch_layout(model).items():
        np.testing.assert_array_equal(value, state[key])
        assert value.dtype == np.float64
    for key, box in model.named_params().items():
        nominal = model.named_nominal()[key]
        np.testing.assert_array_equal(box.lo, nominal)
        np.testing.assert_array_equal(box.hi, nominal)
        assert box.lo is not nominal and not np.shares_memory(box.lo, nominal)


def test_the_two_formats_hold_the_same_arrays():
    for name in NAMES:
        a = read_state_dict(FIXTURES / f"torch_{name}.safetensors")
        b = read_state_dict(FIXTURES / f"torch_{name}.npz")
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype == np.float64


@pytest.mark.parametrize("name", NAMES)
def test_float64_weights_into_a_float32_model_are_rounded_to_nearest(name):
    model = build(name, dtype=np.float32)
    load_weights(model, FIXTURES / f"torch_{name}.npz")
    state = read_state_dict(FIXTURES / f"torch_{name}.npz")
    for key, value in torch_layout(model).items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, state[key].astype(np.float32))
    for key, box in model.named_params().items():
        assert box.dtype == np.float32
        np.testing.assert_array_equal(box.lo, model.named_nominal()[key])
        np.testing.assert_array_equal(box.hi, model.named_nominal()[key])
    # the float32 model's interval forward contains its own nominal forward
    x, _ = fixture_io(name)
    x = x.astype(np.float32)
    assert bool(model.forward(Interval(x)).contains(model.forward_nominal(x)).all())


# --------------------------------------------------------------- bad files


def write_state(path: Path, state: dict) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **state)
    else:
        import safetensors.numpy

        path.write_bytes(
            safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in state.items()})
        )
    return path


def fixture_state(name="mlp") -> dict:
    return read_state_dict(FIXTURES / f"torch_{name}.npz")


def check_refused(model, path, *words):
    """``load_weights`` raises a one-line ValueError with ``words`` and loads nothing."""
    before = snapshot(model)
    with pytest.raises(ValueError) as info:
        load_weights(model, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message
    after = snapshot(model)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    return message


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_missing_weights_are_named(tmp_path, suffix):
    state = fixture_state()
    del state["2.bias"]
    check_refused(build("mlp"), write_state(tmp_path / f"w{suffix}", state), "missing", "2.bias")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_unexpected_weights_are_named(tmp_path, suffix):
    state = fixture_state()
    state["5.weight"] = np.ones((2, 2))
    state["features.running_mean"] = np.zeros(3)
    message = check_refused(
        build("mlp"),
        write_state(tmp_path / f"w{suffix}", state),
        "unexpected",
        "5.weight",
        "features.running_mean",
    )
    assert "0.weight" not in message.split("(")[0]  # only the extra names are listed as such


def test_many_unexpected_weights_are_listed_in_part(tmp_path):
    state = fixture_state()
    state.update({f"extra{i}": np.zeros(1) for i in range(20)})
    message = check_refused(build("mlp"), write_state(tmp_path / "w.npz", state), "15 more")
    assert len(message) < 400


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_weight_in_our_layout_is_a_shape_mismatch(tmp_path, suffix):
    state = fixture_state()
    state["0.weight"] = np.ascontiguousarray(state["0.weight"].T)  # (in, out): not torch's
    check_refused(
        build("mlp"),
        write_state(tmp_path / f"w{suffix}", state),
        "0.weight",
        "(4, 6)",
        "(6, 4)",
        "(out, in)",
    )


def test_a_bias_of_the_wrong_size_is_a_shape_mismatch(tmp_path):
    state = fixture_state()
    state["2.bias"] = np.zeros(4)
    check_refused(build("mlp"), write_state(tmp_path / "w.npz", state), "2.bias", "(4,)", "(3,)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_non_finite_weights_are_refused(tmp_path, suffix, bad):
    state = fixture_state()
    state["2.weight"] = state["2.weight"].copy()
    state["2.weight"][1, 2] = bad
    check_refused(build("mlp"), write_state(tmp_path / f"w{suffix}", state), "2.weight", "NaN")


def test_weights_that_overflow_the_models_dtype_are_refused(tmp_path):
    state = fixture_state()
    state["0.bias"] = state["0.bias"].copy()
    state["0.bias"][0] = 1e300  # finite in float64, infinite in float32
    path = write_state(tmp_path / "w.npz", state)
    check_refused(build("mlp", dtype=np.float32), path, "0.bias", "overflow", "float32")
    load_weights(build("mlp"), path)  # a float64 model holds it


@pytest.mark.parametrize(
    "suffix,dtype",
    [(s, d) for s in SUFFIXES for d in (np.int64, np.int32, np.bool_)] + [(".npz", np.complex128)],
)
def test_non_float_weights_are_refused(tmp_path, suffix, dtype):
    state = fixture_state()
    state["0.bias"] = np.zeros(6, dtype=dtype)
    path = write_state(tmp_path / f"w{suffix}", state)
    check_refused(build("mlp"), path, "0.bias", np.dtype(dtype).name, "floats")


def test_float16_weights_are_converted_exactly(tmp_path):
    state = {k: v.astype(np.float16) for k, v in fixture_state().items()}
    model = build("mlp")
    load_weights(model, write_state(tmp_path / "w.safetensors", state))
    for key, value in torch_layout(model).items():
        np.testing.assert_array_equal(value, state[key].astype(np.float64))


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_a_dtype_numpy_lacks_is_refused_clearly(tmp_path):
    header = {"0.bias": {"dtype": "BF16", "shape": [6], "data_offsets": [0, 12]}}
    path = tmp_path / "w.safetensors"
    path.write_bytes(_safetensors_bytes(header, bytes(12)))
    with pytest.raises(ValueError, match="BF16 has no NumPy equivalent") as info:
        read_state_dict(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name,data,words",
    [
        ("w.pt", b"\x80\x02}q\x00.", ["must be a .safetensors or an .npz"]),
        ("w", b"", ["must be a .safetensors or an .npz", "no suffix"]),
        ("w.safetensors", b"", ["not a readable .safetensors file"]),
        ("w.safetensors", b"garbage bytes, not a header", ["not a readable .safetensors file"]),
        ("w.npz", b"", ["not a readable .npz archive"]),
        ("w.npz", b"PK\x03\x04 truncated", [".npz"]),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    message = check_refused(build("mlp"), path, *words)
    assert "Traceback" not in message


def test_a_truncated_safetensors_file_is_refused(tmp_path):
    data = (FIXTURES / "torch_mlp.safetensors").read_bytes()
    path = tmp_path / "w.safetensors"
    path.write_bytes(data[:-5])
    check_refused(build("mlp"), path, "not a readable .safetensors file")


def test_a_missing_file_and_a_directory_are_refused(tmp_path):
    check_refused(build("mlp"), tmp_path / "none.safetensors", "no such weights file")
    (tmp_path / "d.npz").mkdir()
    check_refused(build("mlp"), tmp_path / "d.npz", "directory")


def test_an_npz_with_an_object_array_is_never_unpickled(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{"0.weight": np.array([{"a": 1}], dtype=object)})
    check_refused(build("mlp"), path, "object dtype")


# --------------------------------------------------------------- export


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_gives_identical_arrays(tmp_path, name, suffix, dtype):
    model = build(name, dtype=dtype, seed=1)
    path = save_weights(model, tmp_path / f"w{suffix}")
    assert path == tmp_path / f"w{suffix}"
    fresh = build(name, dtype=dtype, seed=2)
    load_weights(fresh, path)
    saved = snapshot(model)
    for key, value in snapshot(fresh).items():
        assert value.dtype == dtype
        np.testing.assert_array_equal(value, saved[key])
    state = read_state_dict(path)
    for key, value in torch_layout(model).items():
        assert state[key].dtype == dtype and state[key].flags.c_contiguous
        np.testing.assert_array_equal(state[key], value)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_exporting_a_loaded_fixture_reproduces_it_bit_for_bit(tmp_path, name, suffix):
    model = build(name)
    load_weights(model, FIXTURES / f"torch_{name}{suffix}")
    path = save_weights(model, tmp_path / f"w{suffix}")
    fixture, saved = read_state_dict(FIXTURES / f"torch_{name}{suffix}"), read_state_dict(path)
    assert saved.keys() == fixture.keys()
    for key in fixture:
        assert saved[key].dtype == fixture[key].dtype
        assert saved[key].tobytes() == fixture[key].tobytes()


def test_save_writes_the_nominal_not_the_box(tmp_path):
    model = mlp(3, 2, hidden=4, seed=0)
    nominal = {k: v.copy() for k, v in model.named_nominal().items()}
    model.load({k: Interval(v - 0.5, v + 0.25) for k, v in nominal.items()}, nominal)
    state = read_state_dict(save_weights(model, tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(state["0.weight"], nominal["0.weight"].T)
    np.testing.assert_array_equal(state["2.bias"], nominal["2.bias"])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_refuses_to_overwrite_unless_asked(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"user data")
    model = build("mlp")
    with pytest.raises(FileExistsError, match="refusing to overwrite") as info:
        save_weights(model, path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == b"user data"
    save_weights(model, path, overwrite=True)
    assert read_state_dict(path).keys() == torch_layout(model).keys()


def test_save_refuses_an_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="must be a .safetensors or an .npz"):
        save_weights(build("mlp"), tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- torch itself


def torch_fixture_module():
    spec = importlib.util.spec_from_file_location(
        "make_torch_fixture", FIXTURES / "make_torch_fixture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_export_loads_into_the_equivalent_torch_sequential(tmp_path, name, suffix, dtype):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors.torch")
    import safetensors.torch

    model = build(name, dtype=dtype, seed=3)
    path = save_weights(model, tmp_path / f"w{suffix}")
    _, in_features, make = torch_fixture_module().MODELS[name]
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    torch_model = make().to(torch_dtype).eval()
    if suffix == ".safetensors":
        state = safetensors.torch.load_file(path)
    else:
        with np.load(path, allow_pickle=False) as f:
            state = {k: torch.from_numpy(f[k]) for k in f.files}
    assert {v.dtype for v in state.values()} == {torch_dtype}  # no cast on the way in
    torch_model.load_state_dict(state, strict=True)
    for key, value in torch_model.state_dict().items():  # the very numbers, in torch's layout
        np.testing.assert_array_equal(value.numpy(), torch_layout(model)[key])
    x = np.random.default_rng(4).normal(size=(5, in_features)).astype(dtype)
    with torch.no_grad():
        y = torch_model(torch.from_numpy(x)).numpy()
    tol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(model.forward_nominal(x), y, rtol=tol, atol=tol / 10)
    if dtype == np.float64:  # torch's float64 CPU kernels are plain float evaluations; its
        # float32 ones may pick other algorithms (oneDNN), so only closeness is asserted there
        assert bool(model.forward(Interval(x)).contains(y).all())


# --------------------------------------------------------------- the command line


@pytest.fixture
def model_file(tmp_path):
    """A model file whose box is wider than its nominal model."""
    model = mlp(3, 2, hidden=4, seed=0)
    nominal = {k: v.copy() for k, v in model.named_nominal().items()}
    model.load({k: Interval(v - 0.5, v + 0.25) for k, v in nominal.items()}, nominal)
    return save_model(tmp_path / "m.npz", model, ThreatModel(epsilon=0.01))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_export_command_writes_the_nominal_model(run, model_file, tmp_path, suffix):
    out = tmp_path / "sub" / f"w{suffix}"
    result = run("export", model_file, out)
    assert result.output.strip().splitlines() == [
        f"wrote {out}: the nominal model's 26 parameters (PyTorch state_dict layout)"
    ]
    model, _ = load_model(model_file)
    state = read_state_dict(out)
    assert state.keys() == torch_layout(model).keys()
    for key, value in torch_layout(model).items():
        np.testing.assert_array_equal(state[key], value)
    fresh = mlp(3, 2, hidden=4, seed=5)
    load_weights(fresh, out)
    for key, value in fresh.named_nominal().items():
        np.testing.assert_array_equal(value, model.named_nominal()[key])


def test_export_command_on_a_cnn_model_file_gives_the_fixture_back(run, tmp_path):
    from intervalnn.architecture import build as build_architecture

    text, in_features = ARCHITECTURES["cnn"]
    model = build_architecture(text, in_features, frozen=7)
    load_weights(model, FIXTURES / "torch_cnn.npz")
    path = save_model(tmp_path / "cnn.npz", model, ThreatModel(epsilon=0.01))
    out = tmp_path / "cnn.safetensors"
    assert "212 parameters" in run("export", path, out).output
    fixture, saved = read_state_dict(FIXTURES / "torch_cnn.safetensors"), read_state_dict(out)
    assert saved.keys() == fixture.keys()
    for key in fixture:
        assert saved[key].tobytes() == fixture[key].tobytes()


def test_export_command_refuses_to_overwrite_without_force(run, error, model_file, tmp_path):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"user data")
    message = error("export", model_file, out, code=2)
    assert "exists" in message and "--force" in message
    assert out.read_bytes() == b"user data"
    run("export", model_file, out, "--force")
    assert read_state_dict(out).keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_export_command_refuses_bad_outputs(error, model_file, tmp_path):
    before = model_file.read_bytes()
    assert "model file itself" in error("export", model_file, model_file, code=2)
    assert "model file itself" in error("export", model_file, model_file, "--force", code=2)
    assert model_file.read_bytes() == before
    message = error("export", model_file, tmp_path / "w.pt", code=2)
    assert ".safetensors or .npz" in message and "OUT" in message
    assert "directory" in error("export", model_file, tmp_path, code=2)
    assert not (tmp_path / "w.pt").exists()


def test_export_command_reports_a_bad_model_file_in_one_line(error, tmp_path):
    message = error("export", tmp_path / "none.npz", tmp_path / "w.safetensors")
    assert "no such model file" in message
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    assert "not an intervalnn model file" in error("export", bad, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


# --------------------------------------------------------------- the GPU backend


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_weights_in_and_out_on_the_gpu(tmp_path, name):
    cupy = pytest.importorskip("cupy", reason="the GPU backend needs CuPy")
    from intervalnn.architecture import build as build_architecture
    from intervalnn.backend import cuda_device_count

    try:
        if cuda_device_count() == 0:
            pytest.skip("no CUDA GPU is visible")
    except RuntimeError:
        pytest.skip("no usable CUDA driver or runtime")
    text, in_features = ARCHITECTURES[name]
    model = build_architecture(text, in_features, backend="cupy")
    load_weights(model, FIXTURES / f"torch_{name}.safetensors")
    for value in model.named_nominal().values():
        assert isinstance(value, cupy.ndarray)
    x, y = fixture_io(name)
    np.testing.assert_allclose(
        host(model.forward_nominal(cupy.asarray(x))), y, rtol=1e-13, atol=1e-14
    )
    out = model.forward(Interval(cupy.asarray(x)))
    assert bool(host(out.contains(cupy.asarray(y))).all())
    path = save_weights(model, tmp_path / "w.safetensors")
    fixture = read_state_dict(FIXTURES / f"torch_{name}.safetensors")
    saved = read_state_dict(path)
    assert saved.keys() == fixture.keys()
    for key in fixture:
        assert saved[key].tobytes() == fixture[key].tobytes()
