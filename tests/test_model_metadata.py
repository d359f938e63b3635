"""Model metadata edited by hand with the SHA-256 recomputed (issue 12, item 10).

The hash is recomputed as the README describes it (a SHA-256 over every other
entry: name, dtype, shape and bytes, names in order), so only the schema
check of :func:`~intervalnn.io.load_model` stands between an edit and the
code that reads the metadata: a load either succeeds with well-formed
metadata or raises :class:`~intervalnn.io.ModelFileError`, never anything else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from intervalnn.experiment.saved import model_info, saved_threat
from intervalnn.interval import Interval
from intervalnn.io import ModelFileError, load_model, save_model
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel


def _model():
    model = mlp(3, 2, hidden=4, layers=2, seed=1)
    boxes = {k: Interval(v - 0.01, v + 0.01) for k, v in model.named_nominal().items()}
    model.load(boxes, model.named_nominal())
    return model


def _original(directory: Path) -> dict[str, np.ndarray]:
    path = directory / "orig.npz"
    save_model(
        path,
        _model(),
        ThreatModel(1e-3, 5e-4, (0.0, 1.0)),
        config={"epochs": 1, "seed": 0, "validate_every": "step"},
        dataset={"name": "moons", "seed": 0, "num_features": 2},
        history=[
            {"epoch": 0, "step": 0, "loss_lo": math.nan, "mean_width": 0.0},
            {"epoch": 1, "step": 4, "loss_lo": 0.5, "val_certified_accuracy": 0.5},
        ],
        best={"step": 4, "val_certified_accuracy": 0.5},
    )
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _readme_sha256(arrays: dict[str, np.ndarray]) -> str:
    """The README's hash: SHA-256 over every entry but ``sha256`` (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _write(path: Path, arrays: dict[str, np.ndarray], meta) -> Path:
    out = {k: v for k, v in arrays.items() if k != "sha256"}
    out["meta"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    out["sha256"] = np.frombuffer(_readme_sha256(out).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **out)
    return path


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    arrays = _original(tmp_path_factory.mktemp("meta"))
    return arrays, json.loads(arrays["meta"].tobytes().decode())


def test_the_readme_hash_is_the_files_hash(original, tmp_path):
    arrays, meta = original
    _write(tmp_path / "m.npz", arrays, meta)
    load_model(tmp_path / "m.npz")  # a rehashed, unedited file loads


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.update(threat_model="0.1"), "threat_model"),
        (lambda m: m.update(threat_model=[0.1]), "threat_model"),
        (lambda m: m.pop("library_version"), "library_version"),
        (lambda m: m.update(library_version=3), "library_version"),
        (lambda m: m["dataset"].update(name=17), "dataset.name"),
        (lambda m: m["dataset"].update(seed="x"), "dataset.seed"),
        (lambda m: m["dataset"].update(pretrain_size=[1]), "dataset.pretrain_size"),
        (lambda m: m["dataset"].update(train=5), "dataset.train"),
        (lambda m: m["threat_model"].update(epsilon="0.1"), "threat_model.epsilon"),
        (lambda m: m["threat_model"].update(epsilon=10**400), "threat_model.epsilon"),
        (lambda m: m["threat_model"].update(domain=[0, "1"]), "threat_model.domain"),
        (lambda m: m["threat_model"].pop("epsilon"), "threat_model.epsilon"),
        (lambda m: m.update(dtype=None), "dtype"),
        (lambda m: m.update(architecture="mlp"), "architecture"),
        (lambda m: m.update(format_version=True), "format_version"),
        (lambda m: m["history"][1].update(step={"a": 1}), "history[1].step"),
        (lambda m: m["best"].update(step="4"), "best.step"),
        (lambda m: m.update(config=[]), "config"),
        # issue 13: the threat model's budgets and the training rules
        (lambda m: m["threat_model"].update(poison_count="3"), "threat_model.poison_count"),
        (lambda m: m["threat_model"].update(poison_count=-1), "threat_model.poison_count"),
        (lambda m: m["threat_model"].update(label_flips=None), "threat_model.label_flips"),
        (lambda m: m["threat_model"].update(label_target=1.5), "threat_model.label_target"),
        (lambda m: m["threat_model"].update(paired=1), "threat_model.paired"),
        (lambda m: m["threat_model"].update(paired=True), "paired needs"),
        (lambda m: m["threat_model"].update(epsilon=math.inf, test_epsilon=None), "epsilon = inf"),
        (lambda m: m["config"].update(steps=0), "config.steps"),
        (lambda m: m["config"].update(clip="1"), "config.clip"),
        (lambda m: m["config"].update(momentum=[0.9]), "config.momentum"),
        (lambda m: m["config"].update(nesterov="yes"), "config.nesterov"),
        (lambda m: m["dataset"].update(trusted=-2), "dataset.trusted"),
        (lambda m: m["dataset"].update(train_size="n"), "dataset.train_size"),
    ],
)
def test_edited_metadata_is_a_model_file_error_naming_the_field(
    original, tmp_path, edit, field, error
):
    arrays, meta = original
    meta = copy.deepcopy(meta)
    edit(meta)
    path = _write(tmp_path / "m.npz", arrays, meta)
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert field in str(exc.value) and "\n" not in str(exc.value)
    for command in (("info", path), ("certify", path), ("audit", path)):
        assert field in error(*command)


def _json_values():
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=6,
    )


def _paths(meta: dict, prefix=()) -> list[tuple]:
    """Every key path into the metadata (objects and arrays), two levels deep and more."""
    out = []
    items = meta.items() if isinstance(meta, dict) else enumerate(meta)
    for k, v in items:
        out.append((*prefix, k))
        if isinstance(v, dict | list) and len(prefix) < 3:
            out.extend(_paths(v, (*prefix, k)))
    return out


_KEYS = ["name", "seed", "pretrain_size", "train", "epsilon", "test_epsilon", "domain", "step"]
_KEYS += ["epoch", "type", "pretrain_epochs", "validate_every", "x"]
_KEYS += ["poison_count", "label_flips", "label_target", "paired", "trusted", "train_size"]
_KEYS += ["clip", "clip_method", "momentum", "nesterov", "weight_decay", "lr_decay", "steps"]

edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),  # which path
        st.sampled_from(["set", "delete", "add"]),
        st.sampled_from(_KEYS),
        _json_values(),
    ),
    min_size=1,
    max_size=4,
)


def _apply(meta: dict, edit) -> None:
    which, op, key, value = edit
    paths = _paths(meta)
    if not paths:
        return
    path = paths[which % len(paths)]
    parent = meta
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "set":
        parent[last] = value
    elif op == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    else:  # a new key in an object (or a replaced element in an array)
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[key] = value
        else:
            target[last] = value


def _well_formed(model, meta) -> None:
    assert isinstance(meta["threat_model"], ThreatModel)
    assert isinstance(meta["library_version"], str) and isinstance(meta["dtype"], str)
    for key, kind in (("config", dict), ("dataset", dict), ("history", list), ("best", dict)):
        assert isinstance(meta[key], kind)
    assert meta["dataset"].get("name") is None or isinstance(meta["dataset"]["name"], str)
    assert all(isinstance(r, dict) for r in meta["history"])
    saved_threat(meta)
    saved_threat(meta, 0.01)
    assert model.in_features == 3


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=edits)
def test_arbitrary_metadata_edits_load_or_raise_model_file_error(original, edits):
    arrays, meta = original
    meta = copy.deepcopy(meta)
    for edit in edits:
        _apply(meta, edit)
    with tempfile.TemporaryDirectory() as d:
        path = _write(Path(d) / "m.npz", arrays, meta)
        try:
            model, loaded = load_model(path)
        except ModelFileError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            event("ModelFileError")
            return
        except BaseException:
            event("traceback")
            raise
        _well_formed(model, loaded)
        info = model_info(path)  # what `intervalnn info` prints
        json.dumps(info, default=str)
        event("loaded")


def test_issue13_threat_model_and_rules_round_trip(tmp_path):
    """k-of-n budgets, label flips, epsilon = inf and the training rules survive a model
    file (inf through the JSON metadata), and ``info`` shows them."""
    threat = ThreatModel(math.inf, 0.0, None, 7, 2, 1, True)
    config = {"clip": 0.5, "clip_method": "norm", "momentum": 0.9, "nesterov": True}
    config |= {"weight_decay": 0.01, "lr_decay": 0.1, "lr_min": 0.01, "steps": 12}
    path = tmp_path / "k.npz"
    save_model(path, _model(), threat, config=config, dataset={"train_size": 50, "trusted": 4})
    _, meta = load_model(path)
    assert meta["threat_model"] == threat and math.isinf(meta["threat_model"].epsilon)
    assert saved_threat(meta).test_epsilon == 0.0  # the stored finite test radius
    info = model_info(path)
    assert info["poison_count"] == 7 and info["train_size"] == 50 and info["trusted"] == 4
    assert (info["label_flips"], info["label_target"], info["paired"]) == (2, 1, True)
    assert "at most 7 of 50 training points" in info["threat"] and "class 1" in info["threat"]
    assert info["rules"] == {**config}
    assert "clip 0.5 (norm)" in info["training_rules"] and "Nesterov" in info["training_rules"]


def test_a_model_file_from_before_issue_13_loads_with_the_defaults(original, tmp_path):
    arrays, meta = original
    meta = copy.deepcopy(meta)
    for key in ("poison_count", "label_flips", "label_target", "paired"):
        meta["threat_model"].pop(key, None)
    path = _write(tmp_path / "old.npz", arrays, meta)
    _, loaded = load_model(path)
    assert loaded["threat_model"].is_fullcert and not loaded["threat_model"].paired
    info = model_info(path)
    assert info["poison_count"] is None and info["trusted"] == 0
    assert info["training_rules"] == "plain SGD" and info["rules"]["momentum"] == 0.0
