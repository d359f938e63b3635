"""Architecture strings (issue 14, item 3): parse, shapes, build, describe, model files,
``--arch``, ``--freeze`` and ``--weights`` in ``train``, ``sweep`` and ``info``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from intervalnn import architecture as A
from intervalnn.architecture import (
    LayerSpec,
    build,
    canonical,
    check_frozen,
    describe,
    mlp_string,
    output_shapes,
    parameter_count,
    parse,
)
from intervalnn.experiment import Grid, GridError, RunSpec, SpecError, prepare
from intervalnn.experiment.grid import LATER_OPTIONS, cell_key
from intervalnn.interval import Interval
from intervalnn.io import load_model, save_model
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel

CNN = (
    "unflatten(1,28,28)-conv(8,5)-relu-maxpool(2)-conv(16,5)-relu-maxpool(2)-flatten-"
    "linear(64)-relu-linear(10)"
)
SMALL_CNN = "unflatten(1,4,4)-conv(2,3,padding=1)-relu-maxpool(2)-flatten-linear(4)-relu-linear(1)"


# ------------------------------------------------------------------ random architectures


def _pair(rng, lo, hi):
    a = int(rng.integers(lo, hi + 1))
    return (a, a) if rng.random() < 0.6 else (a, int(rng.integers(lo, hi + 1)))


def _random_layer(rng) -> LayerSpec:
    """Any layer the grammar has (shapes need not fit)."""
    kind = A.KINDS[int(rng.integers(len(A.KINDS)))]
    if kind == "linear":
        return LayerSpec(kind, out=int(rng.integers(1, 300)))
    if kind == "conv":
        return LayerSpec(
            kind, out=int(rng.integers(1, 40)), kernel=_pair(rng, 1, 7),
            stride=_pair(rng, 1, 3), padding=_pair(rng, 0, 3),
        )  # fmt: skip
    if kind in ("maxpool", "avgpool"):
        kernel = _pair(rng, 1, 5)
        stride = kernel if rng.random() < 0.5 else _pair(rng, 1, 4)
        return LayerSpec(kind, kernel=kernel, stride=stride, padding=(0, 0))
    if kind == "unflatten":
        return LayerSpec(kind, shape=tuple(int(s) for s in rng.integers(1, 30, rng.integers(1, 4))))
    return LayerSpec(kind)


def _random_model_specs(rng) -> tuple[list[LayerSpec], int]:
    """A random architecture whose shapes fit, and its input size."""
    if rng.random() < 0.4:  # an MLP
        specs = []
        for _ in range(int(rng.integers(0, 3))):
            specs += [LayerSpec("linear", out=int(rng.integers(1, 8)))]
            specs += [LayerSpec("relu")] * int(rng.integers(0, 2))
        specs.append(LayerSpec("linear", out=int(rng.integers(1, 4))))
        return specs, int(rng.integers(1, 10))
    c, h, w = int(rng.integers(1, 3)), int(rng.integers(4, 9)), int(rng.integers(4, 9))
    specs = [LayerSpec("unflatten", shape=(c, h, w))]
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            k = (int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1)))
            p = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
            s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            specs.append(LayerSpec("conv", out=int(rng.integers(1, 4)), kernel=k, stride=s,
                                   padding=p))  # fmt: skip
            h, w = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
        else:
            k = (int(rng.integers(1, min(h, 2) + 1)), int(rng.integers(1, min(w, 2) + 1)))
            kind = "maxpool" if rng.random() < 0.5 else "avgpool"
            specs.append(LayerSpec(kind, kernel=k, stride=k, padding=(0, 0)))
            h, w = (h - k[0]) // k[0] + 1, (w - k[1]) // k[1] + 1
        if rng.random() < 0.5:
            specs.append(LayerSpec("relu"))
    specs.append(LayerSpec("flatten"))
    if rng.random() < 0.5:
        specs += [LayerSpec("linear", out=int(rng.integers(1, 6))), LayerSpec("relu")]
    specs.append(LayerSpec("linear", out=int(rng.integers(1, 4))))
    return specs, int(np.prod(specs[0].shape))


def _spaced(text: str, rng) -> str:
    """``text`` with spaces sprinkled around its punctuation and names in random case."""
    out = []
    for ch in text:
        if ch in "-(),=" and rng.random() < 0.5:
            out.append(f" {ch} " if ch != "=" else "=")
        else:
            out.append(ch.upper() if ch.isalpha() and ch != "x" and rng.random() < 0.2 else ch)
    return "".join(out)


def test_parse_and_str_round_trip_on_random_layers():
    rng = np.random.default_rng(0)
    for _ in range(300):
        specs = [_random_layer(rng) for _ in range(int(rng.integers(1, 8)))]
        text = "-".join(map(str, specs))
        assert parse(text) == specs
        assert canonical(text) == text
        assert parse(_spaced(text, rng)) == specs  # spaces and case do not matter


def test_defaults_are_left_out_and_filled_in():
    assert canonical("conv(8,5,stride=1,padding=0)") == "conv(8,5)"
    assert canonical("conv(8,5x5,stride=2x2,padding=1x1)") == "conv(8,5,stride=2,padding=1)"
    assert canonical("conv(8,3x5,stride=1x2)") == "conv(8,3x5,stride=1x2)"
    assert canonical("maxpool(2,stride=2)") == "maxpool(2)"
    assert canonical("avgpool(3, stride = 2)") == "avgpool(3,stride=2)"
    assert canonical("linear(08)-RELU()-flatten()") == "linear(8)-relu-flatten"
    [conv] = parse("conv(8,5)")
    assert (conv.kernel, conv.stride, conv.padding) == ((5, 5), (1, 1), (0, 0))
    [pool] = parse("avgpool(3)")
    assert pool.stride == (3, 3)


def test_built_random_models_describe_themselves():
    """build, then describe: the same string; the layers' own shapes agree with ours."""
    rng = np.random.default_rng(1)
    for i in range(60):
        specs, n_in = _random_model_specs(rng)
        text = "-".join(map(str, specs))
        model = build(text, n_in, seed=i)
        assert describe(model) == text and parse(describe(model)) == specs
        assert model.output_shapes() == output_shapes(text, n_in)
        assert model.in_features == n_in and model.frozen == 0
        count = sum(p.size for p in model.named_params().values())
        assert parameter_count(text, n_in) == count
        again = build(describe(model), n_in, seed=i)
        for name, box in model.named_params().items():
            np.testing.assert_array_equal(again.named_params()[name].lo, box.lo)


def test_the_mnist_cnn():
    shapes = output_shapes(CNN, 784)
    assert shapes[1] == (8, 24, 24) and shapes[3] == (8, 12, 12) and shapes[6] == (16, 4, 4)
    assert shapes[7] == (256,) and shapes[-1] == (10,)
    conv = 8 * 25 + 8 + 16 * 8 * 25 + 16
    assert parameter_count(CNN, 784) == conv + 256 * 64 + 64 + 64 * 10 + 10
    model = build(CNN, 784, seed=3, frozen=7)
    assert model.frozen == 7 and describe(model) == CNN and model.out_features == 10


@pytest.mark.parametrize(
    ("hidden", "layers", "out", "n_in", "seed"),
    [(20, 2, 1, 2, 0), (20, 2, 1, 2, 5), (4, 3, 3, 7, 1), (5, 1, 2, 3, 2), (1, 4, 1, 1, 9)],
)
def test_an_mlp_string_builds_layers_mlp(hidden, layers, out, n_in, seed):
    text = mlp_string(hidden, layers, out)
    a, b = build(text, n_in, seed=seed), mlp(n_in, out, hidden=hidden, layers=layers, seed=seed)
    assert repr(a) == repr(b) and describe(b) == text
    for name, box in b.named_params().items():
        np.testing.assert_array_equal(a.named_params()[name].lo, box.lo)
        np.testing.assert_array_equal(a.named_params()[name].hi, box.hi)
        np.testing.assert_array_equal(a.named_nominal()[name], b.named_nominal()[name])
    assert mlp_string(20, 2, 1) == "linear(20)-relu-linear(1)"
    f32 = build(text, n_in, seed=seed, dtype=np.float32)
    assert f32.dtype == np.float32


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty architecture"),
        ("   ", "empty architecture"),
        ("lin(3)", "layer 0 'lin(3)': unknown layer 'lin'; known: linear, relu"),
        ("linear(3)-sigmoid", "layer 1 'sigmoid': unknown layer"),
        ("linear", "layer 0 'linear': linear takes 1 argument (linear(OUT)), got 0"),
        ("linear(3,4)", "linear takes 1 argument (linear(OUT)), got 2"),
        ("linear(0)", "layer 0 'linear(0)': OUT must be a positive integer, got '0'"),
        ("linear(-3)", "layer 0 'linear(-3)': OUT must be a positive integer, got '-3'"),
        ("linear(3.5)", "OUT must be a positive integer, got '3.5'"),
        ("linear(x)", "OUT must be a positive integer, got 'x'"),
        ("linear(\u0663)", "OUT must be a positive integer"),  # a non-ASCII digit
        ("relu(2)", "layer 0 'relu(2)': relu takes no arguments (relu), got 1"),
        ("linear(3)--relu", "empty layer 1"),
        ("-linear(3)", "empty layer 0"),
        ("linear(3)-", "empty layer 1"),
        ("linear(3", "unbalanced or nested parentheses"),
        ("linear(3))", "unbalanced or nested parentheses"),
        ("linear((3))", "unbalanced or nested parentheses"),
        ("linear(3)(4)", "layer 0 'linear(3)(4)': not NAME or NAME(ARGS)"),
        ("linear(3)x", "not NAME or NAME(ARGS)"),
        ("conv(8)", "layer 0 'conv(8)': conv takes 2 arguments (conv(OUT,K)), got 1"),
        ("conv(0,3)", "OUT must be a positive integer, got '0'"),
        ("conv(8,0)", "K must be an integer >= 1 or HxW, got '0'"),
        ("conv(8,3x0)", "K must be a positive integer, got '0'"),
        ("conv(8,2x)", "K must be an integer >= 1 or HxW, got '2x'"),
        ("conv(8,5,stride=0)", "stride must be an integer >= 1 or HxW, got '0'"),
        ("conv(8,5,padding=-1)", "padding must be an integer >= 0 or HxW, got '-1'"),
        ("conv(8,5,dilation=2)", "unknown argument 'dilation' (conv takes stride, padding)"),
        ("conv(8,5,stride=2,stride=2)", "stride is given twice"),
        ("conv(8,stride=2,5)", "positional argument '5' after a keyword argument"),
        ("maxpool(2,padding=1)", "unknown argument 'padding' (maxpool takes stride)"),
        ("avgpool(0)", "K must be an integer >= 1 or HxW, got '0'"),
        ("maxpool()", "maxpool takes 1 argument (maxpool(K)), got 0"),
        ("linear(3,out=4)", "unknown argument 'out' (linear takes no keyword arguments)"),
        ("unflatten()", "unflatten takes the shape of a row, e.g. unflatten(1,28,28)"),
        ("unflatten(1,0,3)", "every size must be a positive integer, got '0'"),
    ],
)
def test_a_malformed_string_is_a_one_line_error_naming_the_token(text, words):
    with pytest.raises(ValueError) as exc:
        parse(text)
    msg = str(exc.value)
    assert words in msg and "\n" not in msg


def test_a_non_string_and_a_long_string_are_one_line_errors():
    with pytest.raises(ValueError, match="not int"):
        parse(5)
    with pytest.raises(ValueError) as exc:
        parse("linear(3)-" * 50 + "lin\n(3)")
    assert "layer 50 'lin (3)'" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "n_in", "words"),
    [
        ("conv(8,5)-flatten-linear(1)", 784, "layer 0 'conv(8,5)': data rows are flat"),
        ("relu-linear(1)", 3, "layer 0 'relu': data rows are flat"),
        ("linear(3)-conv(2,1)-flatten-linear(1)", 4, "layer 1 'conv(2,1)' needs an image (C, H,"),
        ("linear(4)-maxpool(2)-linear(1)", 4, "got a flat input: unflatten it first"),
        ("unflatten(4,4)-conv(2,1)-flatten-linear(1)", 16, "got shape (4, 4)"),
        ("unflatten(1,28,28)-linear(3)", 784, "layer 1 'linear(3)' needs a flat input, got an"),
        ("unflatten(1,28,27)-flatten-linear(1)", 784, "has 756 values, but its input has 784"),
        ("unflatten(1,4,4)-unflatten(16)-linear(1)", 16, "layer 1 'unflatten(16)' needs a flat"),
        ("unflatten(1,4,4)-conv(2,5)-flatten-linear(1)", 16, "kernel 5 is larger than its input"),
        ("unflatten(1,4,4)-conv(2,7,padding=1)-flatten-linear(1)", 16, "padded input (height 6"),
        ("unflatten(1,4,4)-conv(2,3x5)-flatten-linear(1)", 16, "kernel 5 is larger than its i"),
        ("unflatten(1,4,4)-maxpool(3)-maxpool(2)-flatten-linear(1)", 16, "layer 2 'maxpool(2)'"),
        ("unflatten(1,2,2)-flatten", 4, "it has none: end with linear(N)"),
        ("unflatten(1,2,2)-conv(1,1)", 4, "it has none: end with flatten-linear(N)"),
        ("linear(3)-flatten", 4, "layer 1 'flatten' follows the last linear(N) (layer 0)"),
        ("linear(8)-unflatten(2,2,2)-conv(1,1)-flatten", 4, "layer 1 'unflatten(2,2,2)' follows"),
    ],
)
def test_shapes_that_do_not_fit_are_one_line_errors(text, n_in, words):
    for call in (
        lambda: output_shapes(text, n_in),
        lambda: parameter_count(text, n_in),
        lambda: build(text, n_in),
    ):
        with pytest.raises(ValueError) as exc:
            call()
        assert words in str(exc.value) and "\n" not in str(exc.value)


def test_shapes_that_fit_where_they_might_not():
    assert output_shapes("linear(3)-relu-relu", 2) == [(3,), (3,), (3,)]
    assert output_shapes("unflatten(1,3,3)-conv(1,3)-flatten-linear(1)", 9)[1] == (1, 1, 1)
    assert output_shapes("unflatten(1,1,1)-conv(2,3,padding=1)-flatten-linear(1)", 1)[1] == (
        2, 1, 1
    )  # fmt: skip
    assert output_shapes("unflatten(1,5,5)-maxpool(2)-flatten-linear(1)", 25)[1] == (1, 2, 2)
    assert output_shapes("unflatten(1,5,5)-avgpool(3,stride=1)-flatten-linear(1)", 25)[1] == (
        1, 3, 3
    )  # fmt: skip
    assert output_shapes("unflatten(16)-unflatten(1,4,4)-flatten-linear(1)", 16)[1] == (1, 4, 4)
    for bad in (0, True, 2.0, "2"):
        with pytest.raises(ValueError, match="in_features must be a positive integer"):
            output_shapes("linear(1)", bad)
    model = build("linear(3)-relu-linear(1)", np.int64(2), frozen=np.int64(1))  # x.shape[1]
    assert model.in_features == 2 and model.frozen == 1 and type(model.frozen) is int


def test_freeze_errors():
    text = "linear(4)-relu-linear(1)"
    check_frozen(text, 0)
    check_frozen(text, 2)
    for frozen, words in (
        (4, "cannot freeze 4 layers: the model has 3"),
        (3, "freezing 3 of the 3 layers leaves no layer with parameters to train"),
        (-1, "frozen must be an integer >= 0"),
    ):
        with pytest.raises(ValueError) as exc:
            build(text, 2, frozen=frozen)
        assert words in str(exc.value) and "\n" not in str(exc.value)
    # the last layer with parameters is frozen, only a ReLU after it
    with pytest.raises(ValueError, match="last layer with parameters is layer 2"):
        check_frozen(text + "-relu", 3)
    model = build(text, 2, frozen=2)
    assert model.frozen == 2


def test_describe_refuses_a_layer_it_cannot_name():
    class Odd:
        params: dict = {}

    with pytest.raises(ValueError, match="has no architecture string"):
        A.layer_spec(Odd())


# ------------------------------------------------------------------ model files


def _boxed(model, seed=2):
    """``model`` with a genuine parameter box around its nominal parameters (the frozen
    layers' boxes too: the file must keep whatever it is given)."""
    rng = np.random.default_rng(seed)
    boxes = {}
    for name, nom in model.named_nominal().items():
        lo = (nom - rng.uniform(0, 0.01, nom.shape)).astype(nom.dtype)
        hi = (nom + rng.uniform(0, 0.01, nom.shape)).astype(nom.dtype)
        boxes[name] = Interval(np.minimum(lo, nom), np.maximum(hi, nom))
    model.load(boxes, model.named_nominal())
    return model


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_cnn_model_file_round_trips(tmp_path, dtype):
    text = (
        "unflatten(2,6,5)-conv(3,3x2,stride=2x1,padding=1)-relu-avgpool(2,stride=1)-flatten-"
        "linear(4)-relu-linear(3)"
    )
    model = _boxed(build(text, 60, seed=4, frozen=3, dtype=np.dtype(dtype)))
    path = tmp_path / "cnn.npz"
    save_model(path, model, ThreatModel(1e-3))
    loaded, meta = load_model(path)
    assert describe(loaded) == text and loaded.frozen == 3 and loaded.in_features == 60
    assert meta["architecture"] == {
        "type": "sequential", "string": text, "in_features": 60, "out_features": 3, "frozen": 3
    }  # fmt: skip
    assert loaded.named_params().keys() == model.named_params().keys()
    assert "1.weight" in loaded.named_params() and loaded.named_params()["1.weight"].shape == (
        3, 2, 3, 2
    )  # fmt: skip
    for name, box in model.named_params().items():
        got = loaded.named_params()[name]
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got.lo, box.lo)
        np.testing.assert_array_equal(got.hi, box.hi)
        np.testing.assert_array_equal(loaded.named_nominal()[name], model.named_nominal()[name])
    x = np.random.default_rng(0).uniform(0, 1, (3, 60)).astype(dtype)
    np.testing.assert_array_equal(loaded.forward_nominal(x), model.forward_nominal(x))
    a, b = model.forward(Interval.ball(x, 1e-3)), loaded.forward(Interval.ball(x, 1e-3))
    np.testing.assert_array_equal(a.lo, b.lo)
    np.testing.assert_array_equal(a.hi, b.hi)


# ------------------------------------------------------------------ run specs and the CLI


def test_the_spec_takes_arch_freeze_and_weights():
    spec = RunSpec.from_options(dataset="moons", arch=" Linear( 8 ) - relu - linear(1)", freeze=1)
    assert spec.model.arch == "linear(8)-relu-linear(1)" and spec.model.freeze == 1
    assert spec.options()["arch"] == "linear(8)-relu-linear(1)"
    assert RunSpec.from_options(spec.options()) == spec
    assert RunSpec.from_options(dataset="moons").model.architecture(1) == mlp_string(20, 2, 1)
    assert spec.model.architecture(1) == "linear(8)-relu-linear(1)"
    with pytest.raises(SpecError) as exc:
        RunSpec.from_options(dataset="moons", arch="linear(8)-relu-linear(1)", hidden=4)
    assert exc.value.field == "arch" and "leave out hidden and layers" in str(exc.value)
    with pytest.raises(SpecError, match="arch: layer 0 'lin\\(8\\)': unknown layer"):
        RunSpec.from_options(dataset="moons", arch="lin(8)")
    with pytest.raises(SpecError, match="freeze"):
        RunSpec.from_options(dataset="moons", freeze=-1)


def _img_data(npz, n=120, side=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, side * side))
    y = (x[:, : side * side // 2].sum(1) > x[:, side * side // 2 :].sum(1)).astype(np.int64)
    return npz("img.npz", x=x, y=y)


def test_prepare_builds_the_arch_frozen_and_seeded(npz):
    data = _img_data(npz)
    spec = RunSpec.from_options(dataset=data, arch=SMALL_CNN, freeze=3, seed=5)
    run = prepare(spec)
    assert describe(run.model) == SMALL_CNN and run.model.frozen == 3
    same = build(SMALL_CNN, 16, seed=5, frozen=3)
    for name, box in same.named_params().items():
        np.testing.assert_array_equal(run.model.named_params()[name].lo, box.lo)
    default = prepare(RunSpec.from_options(dataset=data, seed=5, freeze=1)).model
    assert describe(default) == "linear(20)-relu-linear(1)" and default.frozen == 1
    reference = mlp(16, 1, seed=5)
    np.testing.assert_array_equal(
        default.named_nominal()["0.weight"], reference.layers[0].nominal["weight"]
    )


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"arch": "linear(4)-relu-linear(3)"}, "arch", "ends with linear(3), but loss bce"),
        ({"arch": "unflatten(1,5,5)-flatten-linear(1)"}, "arch", "the data has 16 features"),
        ({"arch": "linear(4)-relu-linear(1)", "freeze": 3}, "freeze", "leaves no layer"),
        ({"freeze": 9}, "freeze", "cannot freeze 9 layers: the model has 3"),
    ],
)
def test_prepare_names_the_option_that_does_not_fit_the_data(npz, options, field, words):
    data = _img_data(npz)
    with pytest.raises(SpecError) as exc:
        prepare(RunSpec.from_options(dataset=data, **options))
    assert words in str(exc.value) and field in str(exc.value) and "\n" not in str(exc.value)


def test_weights_initialise_the_model(npz, tmp_path):
    from intervalnn.weights import save_weights

    data = _img_data(npz)
    source = build(SMALL_CNN, 16, seed=11)
    weights = save_weights(source, tmp_path / "w.safetensors")
    model = prepare(RunSpec.from_options(dataset=data, arch=SMALL_CNN, weights=weights)).model
    for name, value in source.named_nominal().items():
        np.testing.assert_array_equal(model.named_nominal()[name], value)
        np.testing.assert_array_equal(model.named_params()[name].lo, value)
        np.testing.assert_array_equal(model.named_params()[name].hi, value)
    with pytest.raises(SpecError) as exc:  # the MLP's weights do not fit the CNN
        prepare(RunSpec.from_options(dataset=data, weights=weights))
    assert exc.value.field == "weights" and "\n" not in str(exc.value)


def test_cli_train_with_arch_and_freeze_then_info(tmp_path, run, npz):
    data = _img_data(npz)
    out = tmp_path / "cnn.npz"
    summary = json.loads(
        run(
            "train", "--dataset", data, "--arch", SMALL_CNN, "--freeze", "3", "--epochs", "1",
            "--batch-size", "40", "--epsilon", "0.01", "-o", out, "--json",
        ).stdout
    )  # fmt: skip
    assert summary["n"] > 0 and 0 <= summary["certified_accuracy"] <= 1
    model, meta = load_model(out)
    assert describe(model) == SMALL_CNN and model.frozen == 3
    frozen_names = [n for n in model.named_params() if int(n.split(".")[0]) < 3]
    assert frozen_names == ["1.weight", "1.bias"]
    for name in frozen_names:  # frozen: points, whatever the poisoning
        box = model.named_params()[name]
        np.testing.assert_array_equal(box.lo, box.hi)
    text = run("info", out).stdout
    assert "arch " in text and SMALL_CNN in text
    assert "first 3 layers frozen: unflatten(1,4,4)-conv(2,3,padding=1)-relu" in text
    info = json.loads(run("info", out, "--json").stdout)
    assert info["arch"] == SMALL_CNN and info["frozen"].startswith("first 3 layers frozen")
    assert "Conv2d" in info["architecture"]


def test_info_of_an_mlp_says_nothing_is_frozen(tmp_path, run):
    path = tmp_path / "m.npz"
    save_model(path, mlp(2, 1, hidden=5), ThreatModel(1e-3))
    info = json.loads(run("info", path, "--json").stdout)
    assert info["arch"] == "linear(5)-relu-linear(1)" and info["frozen"] == "none"
    save_model(path, build("linear(5)-relu-linear(1)", 2, frozen=1), ThreatModel(1e-3))
    assert json.loads(run("info", path, "--json").stdout)["frozen"] == (
        "first layer frozen: linear(5)"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--arch", "linear(8)-relu-linear(1)", "--hidden", "4"], "--arch gives the whole"),
        (["--arch", "linear(8)-relu-lin(1)"], "layer 2 'lin(1)': unknown layer 'lin'"),
        (["--arch", "linear(8)-relu-linear(3)"], "ends with linear(3), but --loss bce"),
        (["--freeze", "3"], "--freeze"),
        (["--freeze", "-1"], "--freeze"),
        (["--weights", "nowhere.safetensors"], "--weights"),
        (["--arch", "linear(100000000000)-relu-linear(1)"], "too many for this machine"),
    ],
)
def test_cli_usage_errors(tmp_path, error, npz, args, words):
    data = _img_data(npz)
    msg = error("train", "--dataset", data, *args, "-o", tmp_path / "m.npz", code=2)
    assert words in msg
    assert not (tmp_path / "m.npz").exists()


def test_sweep_grids_over_arch_and_freeze():
    a, b = "linear(8)-relu-linear(1)", "unflatten(1,2,1)-conv(2,1)-flatten-linear(1)"
    spelled = "unflatten( 1 , 2 , 1 )-conv(2 , 1x1)-flatten-linear(1)"  # canonical: b
    grid = Grid.from_sources(lists={"dataset": "moons", "arch": f"{a}, {spelled}", "freeze": "0-1"})
    cells = grid.cells()
    assert [(c["arch"], c["freeze"]) for c in cells] == [(a, 0), (a, 1), (b, 0), (b, 1)]
    assert grid.varying() == ["arch", "freeze"]
    with pytest.raises(GridError, match="given twice"):  # the same architecture, spelled twice
        Grid.from_sources(lists={"dataset": "moons", "arch": f"{a},{a.replace('(', ' (')}"})
    with pytest.raises(GridError, match="leave out hidden and layers"):
        Grid.from_sources(lists={"dataset": "moons", "arch": a, "hidden": "4,8"}).cells()


def test_the_new_options_at_their_defaults_keep_cell_keys():
    cell = RunSpec.from_options(dataset="moons").options()
    assert {"arch", "freeze", "weights"} <= set(LATER_OPTIONS)
    old = {k: v for k, v in cell.items() if k not in ("arch", "freeze", "weights")}
    assert cell_key(cell) == cell_key(old)
    assert cell_key({**cell, "freeze": 1}) != cell_key(cell)
    assert cell_key({**cell, "arch": "linear(1)"}) != cell_key(cell)


def test_a_sweep_over_arch_runs(tmp_path, run, npz):
    from intervalnn.experiment.results import read_results

    data = _img_data(npz)
    results = tmp_path / "s.jsonl"
    arches = f"linear(3)-relu-linear(1),{SMALL_CNN}"
    run(
        "sweep", "--dataset", data, "--arch", arches, "--freeze", "0", "--epochs", "1",
        "--batch-size", "60", "--serial", "-q", "--no-models", "--results", results,
    )  # fmt: skip
    rows, _ = read_results(results)
    assert sorted(r["config"]["arch"] for r in rows) == sorted(arches.split(",", 1))
    assert all(r["status"] == "ok" for r in rows)
    assert math.isfinite(rows[0]["metrics"]["certified_accuracy"])


def test_random_text_parses_or_raises_a_one_line_value_error():
    """Any text: a ValueError with one line, or layers whose canonical string is a fixed point."""
    rng = np.random.default_rng(7)
    alphabet = list("linearconvmaxpoolavgflattenunrelu()-,=x0123456789 \n") + ["stride", "padding"]
    parsed = 0
    for _ in range(1500):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 25))))
        if rng.random() < 0.5:  # mutate a valid string instead
            valid = list(SMALL_CNN)
            for _ in range(int(rng.integers(1, 3))):
                valid[int(rng.integers(len(valid)))] = str(rng.choice(alphabet))
            text = "".join(valid)
        try:
            specs = parse(text)
        except ValueError as exc:
            assert "\n" not in str(exc)
            continue
        parsed += 1
        assert canonical(canonical(text)) == canonical(text) and parse(canonical(text)) == specs
    assert parsed > 10  # the mutations hit every kind of error, and some parse


def test_info_of_a_format_1_file(tmp_path, run):
    """A model file from before issue 14 (an MLP's sizes) shows its string, nothing frozen."""
    from intervalnn import io as mio

    path = tmp_path / "old.npz"
    save_model(path, mlp(3, 2, hidden=4, layers=3), ThreatModel(1e-3))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != "sha256"}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["format_version"] = 1
    meta["architecture"] = {
        "type": "mlp", "in_features": 3, "out_features": 2, "layers": 3, "hidden": 4
    }  # fmt: skip
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    arrays["sha256"] = np.frombuffer(mio._digest(arrays).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    info = json.loads(run("info", path, "--json").stdout)
    assert info["arch"] == "linear(4)-relu-linear(4)-relu-linear(2)" and info["frozen"] == "none"
    assert info["format_version"] == 1
