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


# ------------------------------------------------------------------ momentum (issue 13)


def _momentum_run(config, resume=None, checkpoints=None, threat=None):
    sp = two_moons_splits(seed=3, n_train=120)
    model = mlp(2, 1, hidden=6, seed=1)
    result = train(
        model,
        sp.train.x,
        sp.train.y,
        threat or ThreatModel(0.01, poison_count=5),
        config,
        sp.val.x,
        sp.val.y,
        checkpoint=None if checkpoints is None else checkpoints.append,
        checkpoint_every=0.0,
        resume=resume,
    )
    return model, result


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_velocity_survives_a_checkpoint_file_and_resumes_bit_identically(
    tmp_path, nesterov
):
    from intervalnn.checkpoint import checkpoint_bytes, load_checkpoint

    config = TrainConfig(
        epochs=3, learning_rate=0.5, batch_size=40, validate_every="epoch", momentum=0.9,
        nesterov=nesterov, weight_decay=0.01, lr_decay=0.1, clip=2.0,
    )  # fmt: skip
    checkpoints = []
    whole = _momentum_run(config, checkpoints=checkpoints)
    assert [c.epoch for c in checkpoints] == [1, 2, 3]
    for state in checkpoints[:-1]:
        assert state.velocity is not None
        path = tmp_path / f"ck{state.epoch}.npz"
        path.write_bytes(checkpoint_bytes(state, {"run": 1}))
        model = mlp(2, 1, hidden=6, seed=1)
        loaded, options = load_checkpoint(path, model)
        assert options == {"run": 1}
        for plane, (mine, theirs) in enumerate(zip(loaded.velocity, state.velocity, strict=True)):
            assert mine.keys() == theirs.keys()
            for name, v in mine.items():
                if plane == 0:
                    assert np.array_equal(v.lo, theirs[name].lo), name
                    assert np.array_equal(v.hi, theirs[name].hi), name
                else:
                    assert np.array_equal(v, theirs[name]), name
        _same(whole, _momentum_run(config, resume=loaded))


def test_a_velocity_is_needed_to_resume_momentum_bit_identically(tmp_path):
    """The test above fails without the stored velocity: resuming with none differs."""
    config = TrainConfig(
        epochs=2, learning_rate=0.5, batch_size=40, validate_every="epoch", momentum=0.9
    )
    checkpoints = []
    whole = _momentum_run(config, checkpoints=checkpoints)
    state = checkpoints[0]
    state.velocity = None
    model, _ = _momentum_run(config, resume=state)
    assert any(
        not np.array_equal(p.lo, q.lo)
        for p, q in zip(
            whole[0].named_params().values(), model.named_params().values(), strict=True
        )
    )


def test_a_checkpoint_without_momentum_stores_no_velocity(tmp_path):
    from intervalnn.checkpoint import checkpoint_bytes, load_checkpoint

    checkpoints = []
    _momentum_run(TrainConfig(epochs=1, batch_size=60), checkpoints=checkpoints)
    data = checkpoint_bytes(checkpoints[0], {})
    with np.load(__import__("io").BytesIO(data)) as f:
        assert not any(k.startswith("velocity") for k in f.files)
    (tmp_path / "ck.npz").write_bytes(data)
    assert load_checkpoint(tmp_path / "ck.npz")[0].velocity is None


def test_an_interrupted_momentum_cli_run_resumes_bit_identically(
    tmp_path, monkeypatch, invoke, run
):
    import intervalnn.train as train_module

    args = ["train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", "3", "--hidden", "6"]
    args += ["--batch-size", "250", "--validate-every", "epoch", "--poison-count", "10"]
    args += ["--momentum", "0.9", "--nesterov", "--weight-decay", "0.01", "--clip", "1"]
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
    assert stopped.exit_code == 130
    monkeypatch.setattr(train_module, "batch_indices", real)
    from intervalnn.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "ck.npz")[0].velocity is not None
    run(*args, *checkpoint, "--resume", "-o", tmp_path / "resumed.npz")
    (pa, na, ha), (pb, nb, hb) = (_model_arrays(tmp_path / f) for f in ("whole.npz", "resumed.npz"))
    for name, (lo, hi) in pa.items():
        assert np.array_equal(lo, pb[name][0]) and np.array_equal(hi, pb[name][1]), name
        assert np.array_equal(na[name], nb[name]), name
    assert len(ha) == len(hb) == 4
