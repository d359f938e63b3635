"""Dask clusters for sweeps and sharded certification (``intervalnn sweep``, ``certify --workers``).

Dask is the optional ``dask`` extra (``pip install 'intervalnn[dask]'``).
A local cluster runs one single-threaded worker process per core: the tasks
(one training run, or one shard of a test set) are small, so processes, not
threads, give the parallelism, and every BLAS or kernel thread pool inside a
worker is capped at one thread so that workers do not fight over cores.
"""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

from .errors import UnavailableError

#: Environment of each local worker process: one thread per BLAS / Numba / intervalnn pool.
ONE_THREAD = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "INTERVALNN_THREADS",
    )
}

INSTALL = "pip install 'intervalnn[dask]'"


def require_dask(what: str):
    """The ``distributed`` module, or an :class:`UnavailableError` saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UnavailableError(f"{what} needs Dask, which is not installed: {INSTALL}") from None
    return distributed


def local_workers() -> int:
    """The default size of a local cluster: one worker per core this process may use."""
    from intervalnn.kernels.cpu import CORES

    return CORES


def _worker_version() -> str:
    import intervalnn

    return intervalnn.__version__


@contextmanager
def dask_client(what: str, workers: int | None = None, scheduler: str | None = None):
    """A Dask client for ``what`` (named in errors).

    On the running cluster at ``scheduler`` (``tcp://HOST:PORT``, started
    with ``dask scheduler`` and ``dask worker``), or else on a new
    ``LocalCluster`` of ``workers`` single-threaded worker processes
    (default: one per core), closed again on exit.
    """
    distributed = require_dask(what)
    cluster = None
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="15s")
        except (OSError, TimeoutError) as exc:
            raise UnavailableError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                f"'dask scheduler' and its workers with 'dask worker {scheduler}'"
            ) from None
    else:
        with _ignoring_ctrl_c():  # inherited by the workers: Ctrl-C stops this process only
            cluster = distributed.LocalCluster(
                n_workers=workers or local_workers(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: several sweeps may run at once
                env=ONE_THREAD,
                silence_logs=logging.ERROR,  # not the warnings of tasks cancelled by Ctrl-C
            )
        client = distributed.Client(cluster)
    try:
        _check_workers(client, scheduler)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def _ignoring_ctrl_c():
    """Ignore SIGINT while worker processes start, so that they inherit ignoring it.

    A terminal's Ctrl-C reaches the whole process group; the sweep catches it
    and closes the cluster, and the workers would otherwise each print a
    KeyboardInterrupt traceback on the way.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_workers(client, scheduler: str | None) -> None:
    """At least one worker, and every worker runs this version of intervalnn."""
    import intervalnn

    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        raise UnavailableError(
            f"the Dask scheduler at {scheduler} has no workers after 60 s; start some with "
            f"'dask worker {scheduler}'"
        ) from None
    try:
        versions = client.run(_worker_version)
    except ImportError:
        versions = {"some worker": "not installed"}
    wrong = {w: v for w, v in versions.items() if v != intervalnn.__version__}
    if wrong:
        listed = ", ".join(f"{w}: {v}" for w, v in sorted(wrong.items()))
        raise UnavailableError(
            f"every Dask worker needs intervalnn {intervalnn.__version__} installed ({listed})"
        )


def _certify_shard(model, shard, threat):
    from intervalnn.certify import certify

    result = certify(model, *shard, threat)
    return result.margin, result.nominal_correct


def certify_on_dask(model, x, y, threat, *, workers=None, scheduler=None, batch_size=1024):
    """:func:`intervalnn.certify.certify` with the data split into shards across Dask workers.

    Shards are whole multiples of certify's ``batch_size`` rows, so every
    sample is bounded by the same computations as in a serial run: the
    results are identical.  The model travels to each worker once, each
    shard to one worker.
    """
    import numpy as np

    from intervalnn.certify import CertificationResult

    with dask_client("intervalnn certify", workers, scheduler) as client:
        n = len(y)
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        batches = -(-n // batch_size)
        # one batch per shard (~0.1-1 s of work) unless there are many: balanced load
        shard = batch_size * max(1, batches // (16 * n_workers))
        remote_model = client.scatter(model, broadcast=True)
        shards = client.scatter([(x[i : i + shard], y[i : i + shard]) for i in range(0, n, shard)])
        futures = [
            client.submit(_certify_shard, remote_model, part, threat, pure=False) for part in shards
        ]
        parts = client.gather(futures)
    margin = np.concatenate([m for m, _ in parts]) if parts else np.zeros(0)
    correct = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, bool)
    return CertificationResult(margin > 0, margin, correct, threat.inference_epsilon)
