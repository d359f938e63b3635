"""The soundness audits of :mod:`intervalnn.audit` run on a saved model or on a run's spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .errors import SpecError
from .run import prepare
from .saved import load_model_and_data, saved_threat
from .spec import RunSpec


def audit_saved(
    model_path,
    *,
    dataset=None,
    data_dir=None,
    epsilon: float | None = None,
    split: str = "test",
    seed: int | None = None,
    device: str = "cpu",
    audit_seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> dict:
    """:func:`intervalnn.audit.audit_model` of a saved model on a data split.

    ``dataset``/``seed`` default to the model's, ``epsilon`` to its test-time
    radius; ``audit_seed`` seeds the audit's sampling; ``options`` are those
    of ``audit_model`` (``precision``, ``max_points``, ``models``,
    ``inputs``, ``pgd_steps``).
    """
    from intervalnn.audit import audit_model

    model, meta, dataset, splits = load_model_and_data(model_path, dataset, data_dir, seed, device)
    data = getattr(splits, split)
    threat = saved_threat(meta, epsilon)
    report = audit_model(
        model, data.x, data.y, threat, seed=audit_seed, progress=progress, **options
    )
    return {"model": str(model_path), "dataset": dataset, "split": split, **report}


def audit_run(
    spec: RunSpec,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    validate: bool = False,
    layered: bool = False,
    audit_seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> dict:
    """:func:`intervalnn.audit.audit_training` of the training that ``spec`` describes.

    Trains on the first ``train_size`` training points only, if given (the
    trusted ones among them stay trusted); ``layered`` audits the layered
    training step instead of the fused one.  The kept model is certified on
    the test split (its first ``test_size`` points, if given) for the
    certified-flip check: the last model, or with ``validate`` the one
    ``train`` keeps by certified validation accuracy (validation as the spec
    says).  ``options`` are those of ``audit_training`` (``vertices``,
    ``randoms``, ``adversarial``, ``exact``).
    """
    from intervalnn.audit import audit_training

    if not validate:  # no validation data: widths only, once an epoch, not at every step
        spec = dataclasses.replace(
            spec, training=dataclasses.replace(spec.training, validate_every="epoch")
        )
    run = prepare(spec, fused=not layered)
    x, y = run.splits.train.x, run.splits.train.y
    trusted = run.trusted
    if train_size is not None:
        x, y = x[:train_size], y[:train_size]
        trusted = None if trusted is None else trusted[:train_size]
        try:
            run.threat.check_data(len(y), max(run.model.out_features, 2))
        except ValueError as exc:
            raise SpecError("train_size", f"{train_size} points: {exc}") from None
    test = run.splits.test
    tx, ty = test.x, test.y
    if test_size is not None:
        tx, ty = tx[:test_size], ty[:test_size]
    pre = run.splits.pretrain
    report = audit_training(
        run.model,
        x,
        y,
        run.threat,
        run.config,
        pretrain_x=None if pre is None else pre.x,
        pretrain_y=None if pre is None else pre.y,
        test_x=tx if len(ty) else None,
        test_y=ty if len(ty) else None,
        val_x=run.splits.val.x if validate else None,
        val_y=run.splits.val.y if validate else None,
        trusted=trusted,
        seed=audit_seed,
        progress=progress,
        **options,
    )
    return {"dataset": spec.data.dataset, **report}
