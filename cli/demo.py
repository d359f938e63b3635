"""``intervalnn demo``: certified training and certification on Two-Moons in seconds.

The first run in a fresh environment compiles the Numba kernels (about 20 s,
cached on disk afterwards).  :func:`warm_up` does that before the timed
training, on a two-point data set, and :class:`CompileNotice` says on stderr
that it is happening, so the reported training time is training only.
"""

from __future__ import annotations

import time

import click

from intervalnn.datasets import Dataset, Splits
from intervalnn.experiment import RunSpec, load_splits, prepare, train_and_certify

from .common import command
from .options import field_option

#: What :class:`CompileNotice` prints (on stderr) when Numba starts compiling.
COMPILING = "compiling kernels (first run only)..."


class CompileNotice:
    """Context manager: says once (on stderr) when Numba compiles, and times it.

    Numba raises its ``numba:compile`` event only on a cache miss, just before
    compiling, so nothing is printed when every kernel comes from the on-disk
    cache.  ``seconds`` is the wall time spent in (outermost) compilations.
    """

    def __init__(self, message: str = COMPILING):
        self.message = message
        self.said = False
        self.seconds = 0.0
        self._depth = 0
        self._t0 = 0.0
        self._cm = None

    # numba.core.event.Listener's interface (duck-typed: numba is imported lazily)
    def notify(self, event):
        if event.is_start:
            if self._depth == 0:
                self._t0 = time.perf_counter()
                if not self.said:
                    self.said = True
                    click.echo(self.message, err=True)
            self._depth += 1
        elif event.is_end:
            self._depth -= 1
            if self._depth == 0:
                self.seconds += time.perf_counter() - self._t0

    def __enter__(self):
        from numba.core import event

        listener = _listener(self)
        self._cm = event.install_listener("numba:compile", listener)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _listener(notice: CompileNotice):
    from numba.core import event

    class Listener(event.Listener):
        def on_start(self, ev):
            notice.notify(ev)

        def on_end(self, ev):
            notice.notify(ev)

    return Listener()


def tiny_splits(splits: Splits, n: int = 2) -> Splits:
    """The first ``n`` training points as every split: data for :func:`warm_up`."""
    head = splits.train
    small = Dataset(head.x[:n], head.y[:n], head.num_classes, name=f"{head.name}[:{n}]")
    return Splits(small, small, small, None, splits.domain, name=f"{splits.name} (warm-up)")


def warm_up(spec: RunSpec, splits: Splits | None = None) -> float:
    """Train and certify ``spec`` for one epoch on two points, so that every kernel the
    real run calls is compiled (or loaded from Numba's cache) first; the seconds taken."""
    if splits is None:
        splits = load_splits(spec.data, spec.seed)
    tiny = spec.replace(epochs=1, batch_size=2, patience=0, min_step=0, pretrain_epochs=0)
    t0 = time.perf_counter()
    train_and_certify(prepare(tiny, splits=tiny_splits(splits)))
    return time.perf_counter() - t0


@command("demo", short_help="Train and certify Two-Moons in seconds (the Quickstart).")
@field_option(
    "epsilon", help="l-infinity radius of the poisoning and test-time boxes (the paper's 1e-3)."
)
@field_option("epochs")
@field_option(
    "learning_rate",
    help="SGD step size, mean-loss convention: BoundFlow's (the paper's code's) rate divided "
    "by the batch size, since BoundFlow divides gradients by the batch size twice.",
)
@field_option("dtype", help="Endpoint precision of the intervals.")
@field_option("seed", help="Random seed of the data, the initial model and the batch order.")
def demo_command(epsilon, epochs, learning_rate, dtype, seed):
    """Certified training and certification on Two-Moons, printing certified accuracy.

    The first run compiles the Numba kernels (about 20 s, said on stderr and
    not counted as training time); later runs load them from the cache.

    \b
    Example:
      intervalnn demo --epsilon 0.01 --seed 3
    """
    spec = RunSpec.from_options(
        dataset="moons", epsilon=epsilon, epochs=epochs, learning_rate=learning_rate,
        dtype=dtype, seed=seed, hidden=20, layers=2, batch_size=100, validate_every="step",
    )  # fmt: skip
    echo = click.echo
    echo(f"Two-Moons (1000 train / 200 val / 200 test), 2-layer MLP (20 hidden), {dtype}")
    echo(f"threat model: every training feature and every test feature within eps = {epsilon}")
    splits = load_splits(spec.data, spec.seed)
    with CompileNotice() as notice:
        warm_up(spec, splits)
        if notice.said:
            click.echo(f"compiled in {notice.seconds:.1f} s (cached for later runs)", err=True)
        compiled = notice.seconds
        prepared = prepare(spec, splits=splits)
        t0 = time.perf_counter()
        outcome = train_and_certify(prepared)
        seconds = time.perf_counter() - t0
        late = notice.seconds - compiled  # kernels the warm-up missed (should be none)
    best, cert = outcome.training.best, outcome.test
    extra = f" (+ {late:.2f} s compiling kernels)" if late else ""
    echo(
        f"trained {epochs} epochs in {seconds - late:.3f} s{extra}; best certified validation "
        f"accuracy {best['val_certified_accuracy']:.1%} at step {best['step']}"
    )
    if outcome.training.stopped:
        echo(f"note: {outcome.training.stopped}")
    echo(f"nominal test accuracy:   {cert.nominal_accuracy:.1%}")
    echo(
        f"certified test accuracy: {cert.certified_accuracy:.1%} "
        f"({int(cert.certified.sum())} of {cert.n} test points)"
    )
