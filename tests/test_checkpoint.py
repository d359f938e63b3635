"""Interrupted training: a checkpoint after any epoch resumes bit-identically (issue 12, 19)."""

from __future__ import annotations

import numpy as np
import pytest

from intervalnn.datasets import two_moons_splits
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train


def _run(config, eps, resume=None, checkpoints=None):
    sp = two_moons_splits(seed=3, n_train=300, n_pretrain=100)
    model = mlp(2, 1 if config.loss == "bce" else 2, hidden=8, seed=1)
    result = train(
        model,
        sp.train.x,
        sp.train.y,
        ThreatModel(eps),
        config,
        sp.val.x,
        sp.val.y,
        sp.pretrain.x,
        sp.pretrain.y,
        checkpoint=None if checkpoints is None else checkpoints.append,
        checkpoint_every=0.0,
        resume=resume,
    )
    return model, result


def _same(a, b):
    (ma, ra), (mb, rb) = a, b
    for (k, p), q in zip(ma.named_params().items(), mb.named_params().values(), strict=True):
        assert np.array_equal(p.lo, q.lo) and np.array_equal(p.hi, q.hi), k
    for k, v in ma.named_nominal().items():
        assert np.array_equal(v, mb.named_nominal()[k]), k
    assert np.array_equal(
        np.array([list(r.values()) for r in ra.history], dtype=float),
        np.array([list(r.values()) for r in rb.history], dtype=float),
        equal_nan=True,
    )
    assert ra.best == rb.best and ra.stopped == rb.stopped


@pytest.mark.parametrize(
    "config,eps",
    [
        (TrainConfig(epochs=4, learning_rate=0.5, validate_every="step", loss="bce"), 0.01),
        (TrainConfig(epochs=4, learning_rate=2.0, schedule="1/t", loss="ce", min_step=3), 0.01),
        (TrainConfig(epochs=3, learning_rate=0.5, pretrain_epochs=2, fused=False), 0.01),
        # nothing certified from step 6 on: the early stop at epoch 4 counts across epochs
        (TrainConfig(epochs=8, learning_rate=1.0, validate_every="step", patience=6), 0.05),
    ],
    ids=["fused-step", "fused-ce-1/t", "layered-pretrained", "patience"],
)
def test_resuming_from_any_epoch_is_bit_identical(config, eps):
    checkpoints = []
    whole = _run(config, eps, checkpoints=checkpoints)
    epochs = [c.epoch for c in checkpoints]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 3
    for state in checkpoints[:-1]:
        _same(whole, _run(config, eps, resume=state))


def test_checkpoints_are_rate_limited():
    checkpoints = []
    config = TrainConfig(epochs=5, learning_rate=0.5)
    sp = two_moons_splits(seed=3, n_train=200)
    train(
        mlp(2, 1, hidden=8, seed=1),
        sp.train.x,
        sp.train.y,
        ThreatModel(0.01),
        config,
        checkpoint=checkpoints.append,
        checkpoint_every=3600.0,
    )
    assert [c.epoch for c in checkpoints] == [5]  # only the last epoch's, within the hour


def _model_arrays(path):
    from intervalnn.io import load_model

    model, meta = load_model(path)
    params = {k: (v.lo, v.hi) for k, v in model.named_params().items()}
    return params, model.named_nominal(), meta["history"]


def test_an_interrupted_cli_run_resumes_bit_identically(tmp_path, monkeypatch, invoke, run):
    import intervalnn.train as train_module

    args = ["train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", "4"]
    run(*args, "-o", tmp_path / "whole.npz")

    real = train_module.batch_indices
    calls = []

    def interrupt_in_epoch_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    checkpoint = ["--checkpoint", tmp_path / "ck.npz", "--checkpoint-every", "0"]
    monkeypatch.setattr(train_module, "batch_indices", interrupt_in_epoch_3)
    stopped = invoke(*args, *checkpoint, "-o", tmp_path / "resumed.npz")
    assert stopped.exit_code == 130 and not (tmp_path / "resumed.npz").exists()
    monkeypatch.setattr(train_module, "batch_indices", real)

    run(*args, *checkpoint, "--resume", "-o", tmp_path / "resumed.npz")
    (pa, na, ha), (pb, nb, hb) = (_model_arrays(tmp_path / f) for f in ("whole.npz", "resumed.npz"))
    for name, (lo, hi) in pa.items():
        assert np.array_equal(lo, pb[name][0]) and np.array_equal(hi, pb[name][1]), name
        assert np.array_equal(na[name], nb[name]), name
    assert len(ha) == len(hb) == 41
    for a, b in zip(ha, hb, strict=True):
        assert np.array_equal(
            np.array(list(a.values())), np.array(list(b.values())), equal_nan=True
        )


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, run, error):
    args = ["train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", "1"]
    run(*args, "--checkpoint", tmp_path / "ck.npz", "-o", tmp_path / "a.npz")
    other = [*args[:-1], "2", "--checkpoint", tmp_path / "ck.npz", "--resume"]
    message = error(*other, "-o", tmp_path / "b.npz")
    assert "epochs differs" in message
    assert "--resume needs --checkpoint" in error(*args, "--resume", code=2)


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, error):
    (tmp_path / "ck.npz").write_bytes(b"PK\x03\x04 not really a zip")
    args = ["train", "--dataset", "moons", "--epochs", "1", "-o", tmp_path / "m.npz"]
    message = error(*args, "--checkpoint", tmp_path / "ck.npz", "--resume")
    assert "checkpoint" in message and "ck.npz" in message


def test_a_checkpoint_whose_parameters_do_not_fit_is_a_one_line_error(tmp_path, run, error):
    import json

    args = ["train", "--dataset", "moons", "--epochs", "1", "-o", tmp_path / "m.npz"]
    run(*args, "--checkpoint", tmp_path / "ck.npz")
    with np.load(tmp_path / "ck.npz") as f:
        arrays = {k: f[k] for k in f.files}
    for plane in ("lo", "hi", "nominal"):  # same options, a parameter of another shape
        arrays[f"{plane}/0.weight"] = arrays[f"{plane}/0.weight"][:1]
    np.savez(tmp_path / "ck.npz", **arrays)
    assert json.loads(bytes(arrays["meta"]).decode())["epoch"] == 1
    message = error(*args, "--checkpoint", tmp_path / "ck.npz", "--resume")
    assert "0.weight" in message
