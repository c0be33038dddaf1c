"""Executors: where an experiment's independent units run (this process, local processes, Ray).

An experiment (:func:`metabt.experiments.compare.compare`,
:func:`metabt.experiments.walkforward.walkforward`) is made of independent units: training
jobs and backtests, one per strategy × fold × seed. An :class:`Executor` submits one unit
(:meth:`Executor.submit`, a :class:`concurrent.futures.Future`), so a caller can start a
unit as soon as what it needs is done, or maps a top-level function over a list of units
and returns the results in the order of the units, whatever order they finished in; no
scheduling is written here, existing engines do it:

- ``serial``: in this process, one unit after the other (:class:`SerialExecutor`);
- ``process``: the standard library's :class:`concurrent.futures.ProcessPoolExecutor`
  with the ``spawn`` start method (:class:`ProcessExecutor`);
- ``ray``: Ray tasks on a local Ray started for the run, or on a cluster joined at
  ``ray_address`` (:class:`RayExecutor`, ``pip install metabt[ray]``).

An experiment is told where to run by an :class:`ExecutorSpec` (which executor, how many
workers, which Ray cluster), checked when it is made, or by an :class:`Executor` already
open; :func:`executor_scope` opens the one of a spec for the run and closes it after.

Every unit runs the same way in all three (:func:`run_unit`): torch, BLAS and OpenMP
limited to one thread (two workers on two cores do not oversubscribe, and a reduction
sums in the same order everywhere) and the global random generators seeded with the
same fixed seed, so a run gives bit-for-bit the same results on every executor. A unit
must be a picklable top-level function of an importable module, and its arguments and
result must pickle.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from metabt._checks import did_you_mean
from metabt.errors import ConfigError

__all__ = [
    "EXECUTOR_NAMES",
    "Executor",
    "ExecutorSpec",
    "ProcessExecutor",
    "RAY_CONNECT_TIMEOUT",
    "RayExecutor",
    "SERIAL",
    "SerialExecutor",
    "executor_scope",
    "make_executor",
    "run_unit",
]

#: The executors a run can use.
EXECUTOR_NAMES = ("serial", "process", "ray")
#: The seed of the global random generators (``random``, NumPy, torch) before each unit;
#: metabt draws from explicit generators only, this makes any stray draw reproducible.
UNIT_SEED = 0
#: Seconds to reach a Ray cluster at ``ray_address`` (its port, then ``ray.init``) before
#: the run is refused; Ray itself would retry for minutes.
RAY_CONNECT_TIMEOUT = 30.0
#: Thread limits every worker starts with (Ray passes them in its runtime environment).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def _unit_scope() -> Iterator[None]:
    """One thread for torch and every BLAS/OpenMP pool, fixed global seeds; restored after."""
    threads = torch.get_num_threads()
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())  # noqa: NPY002
    torch.set_num_threads(1)
    random.seed(UNIT_SEED)
    np.random.seed(UNIT_SEED)  # noqa: NPY002 (the legacy global state, seeded on purpose)
    torch.manual_seed(UNIT_SEED)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.set_rng_state(states[2])
        torch.set_num_threads(threads)


def run_unit(fn: Callable[[T], R], unit: T) -> R:
    """Run ``fn(unit)`` as every executor does: one thread, global generators seeded.

    Args:
        fn: a top-level function (it must pickle for the process and Ray executors).
        unit: its argument.

    Returns:
        ``fn(unit)``.
    """
    with _unit_scope():
        return fn(unit)


#: Seconds between a local worker's checks that the process that started it is alive.
PARENT_CHECK_SECONDS = 0.5


def _exit_with_parent(parent: int) -> None:
    """Exit this worker once ``parent`` is gone (it was killed: nobody will read our results).

    Without it a worker of a killed run goes on with its unit, or its own loop of units (a
    sweep's worker optimises its share of trials into the shared storage), and then waits
    forever for work. On POSIX an orphan is re-parented, so its parent id changes; Windows
    does not re-parent, and there the check never fires.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _init_worker(parent: int) -> None:
    """Start-up of a local worker process: one thread everywhere before any work, and a
    watchdog thread that ends the worker if ``parent``, the process that started it, dies
    (its id is given, not read here: the parent may die while this worker imports)."""
    os.environ.update(THREAD_ENV)
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)
    threading.Thread(
        target=_exit_with_parent, args=(parent,), name="metabt-parent-watch", daemon=True
    ).start()


class Executor(ABC):
    """Runs independent units, one at a time (:meth:`submit`) or a list (:meth:`map`).

    A context manager: leaving it releases the workers (:meth:`close`).

    Attributes:
        name: "serial", "process" or "ray".
        workers: units run at once.
    """

    name: str = ""

    def __init__(self, workers: int = 1) -> None:
        self.workers = _check_workers(workers)

    @abstractmethod
    def submit(self, fn: Callable[[T], R], unit: T) -> Future[R]:
        """Start ``fn(unit)``, run by :func:`run_unit`; its future.

        The engine starts the units in the order they were submitted, as workers free
        up. Wait on the futures with :meth:`wait` (it also reports a dead worker),
        cancel the ones not needed any more with :meth:`cancel`.

        Args:
            fn: a top-level function of an importable module (it is pickled by
                reference for the process and Ray executors).
            unit: its argument; it must pickle.

        Returns:
            A :class:`concurrent.futures.Future` of ``fn(unit)``; its ``result()``
            raises the unit's exception. The serial executor runs the unit before
            returning it, done.
        """

    def wait(self, futures: Collection[Future[Any]]) -> set[Future[Any]]:
        """Block until at least one of ``futures`` is done; the ones done.

        Raises:
            RuntimeError: a worker process died (the process executor).
        """
        finished, _ = wait(futures, return_when=FIRST_COMPLETED)
        return finished

    def cancel(self, futures: Iterable[Future[Any]]) -> None:
        """Cancel the units of ``futures`` not started yet (a running one finishes)."""
        for future in futures:
            future.cancel()

    def map(
        self,
        fn: Callable[[T], R],
        units: Sequence[T],
        *,
        desc: str = "units",
        progress: bool = True,
    ) -> list[R]:
        """``[fn(u) for u in units]``, each unit run by :func:`run_unit`, in this order.

        Args:
            fn: a top-level function of an importable module (it is pickled by
                reference for the process and Ray executors).
            units: its arguments, one per unit; each must pickle.
            desc: the label of the progress bar.
            progress: show a tqdm bar of the units done.

        Returns:
            The results, in the order of ``units``.

        Raises:
            Exception: the first exception a unit raised (the others are cancelled).
        """
        units = list(units)
        if not units:
            return []
        with tqdm(total=len(units), desc=desc, unit="unit", disable=not progress) as bar:
            return self._map(fn, units, bar.update)

    def _map(self, fn: Callable[[T], R], units: list[T], done: Callable[[int], Any]) -> list[R]:
        """Run the units; call ``done(1)`` as each one finishes."""
        futures: list[Future[R]] = []
        try:
            futures = [self.submit(fn, unit) for unit in units]
            pending: set[Future[Any]] = set(futures)
            while pending:
                finished = self.wait(pending)
                pending -= finished
                for future in finished:
                    future.result()  # raises the unit's exception at once
                    done(1)
        except BaseException:
            self.cancel(futures)
            raise
        return [f.result() for f in futures]

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release the workers (and a Ray started by this executor)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SerialExecutor(Executor):
    """Every unit in this process, one after the other (``workers`` is 1).

    :meth:`submit` runs the unit at once and returns its future done (holding the
    unit's exception, if it raised one; an interrupt propagates at once).
    """

    name = "serial"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers)
        self.workers = 1

    def submit(self, fn: Callable[[T], R], unit: T) -> Future[R]:
        future: Future[R] = Future()
        try:
            result = run_unit(fn, unit)
        except Exception as exc:  # kept in the future: its result() raises it
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def _map(self, fn: Callable[[T], R], units: list[T], done: Callable[[int], Any]) -> list[R]:
        out = []
        for unit in units:  # stops at the first exception: no unit runs after it
            out.append(run_unit(fn, unit))
            done(1)
        return out


class ProcessExecutor(Executor):
    """Local worker processes: a :class:`~concurrent.futures.ProcessPoolExecutor`.

    The workers are started with ``spawn``, not ``fork``: a forked child inherits the
    parent's torch/OpenMP thread pools and any lock a thread held at the fork, and can
    deadlock in its first parallel region; ``spawn`` starts a fresh interpreter that
    imports metabt itself (about a second, once per worker and run), is the default on
    macOS and the only method on Windows, so the behaviour is the same everywhere.
    ``forkserver`` would be as safe but is POSIX-only and forks its workers from a server
    that must not have imported torch, which saves nothing here. The pool starts on the
    first :meth:`submit` (each of the first ``workers`` submissions starts a worker) and
    is reused until :meth:`close`. Starting the workers earlier, when the executor is
    made, was measured to save nothing in :func:`metabt.experiments.compare.compare`: the first
    unit is submitted within 20 ms of it (start-up, about 2 s, is paid by each worker
    before its first unit, side by side).

    Args:
        workers: worker processes. Default 1.

    Raises:
        ConfigError: ``workers`` < 1.
    """

    name = "process"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers)
        _check_local_workers(self.workers)
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[[T], R], unit: T) -> Future[R]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        try:
            return self._pool.submit(run_unit, fn, unit)
        except BrokenProcessPool as exc:
            raise self._broken() from exc

    def wait(self, futures: Collection[Future[Any]]) -> set[Future[Any]]:
        finished = super().wait(futures)
        for future in finished:
            if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
                raise self._broken() from future.exception()
        return finished

    def _broken(self) -> RuntimeError:
        self.close()
        return RuntimeError(
            "a worker process of executor 'process' died (out of memory, killed, or it "
            "could not import metabt: check that `python -c 'import metabt'` works); "
            "rerun, with fewer `workers` or `executor` serial"
        )

    def close(self) -> None:
        # the workers are told to exit and do so while the caller goes on (their
        # interpreter teardown takes seconds); the pool joins them at the latest at exit
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Ray tasks, one CPU each: a local Ray started for the run, or a cluster joined.

    With ``address`` None a new local Ray is started with ``workers`` CPUs and no
    dashboard (``ray.init(address="local", num_cpus=workers, include_dashboard=False)``)
    and shut down by :meth:`close`; with an address (``"auto"``, ``"ray://head:10001"``,
    ``"10.0.0.1:6379"``) the run joins that cluster, every node of which must have
    metabt installed, and leaves it running. If Ray is already initialised in this
    process, that Ray is used and left running. A unit is a task whose future is its
    ``ObjectRef.future()``; :meth:`cancel` cancels the task itself (``ray.cancel``), which
    cancelling that future alone would not.

    A cluster must answer within ``connect_timeout`` seconds: its address's port is
    tried when the executor is made (a refused or silent port is an error at once, before
    any work), and ``ray.init`` must return within what is left of the time, else
    ConfigError (Ray itself retries for minutes).

    Args:
        workers: CPUs of the local Ray (with ``address``: the cluster's CPUs are used,
            ``workers`` only sizes the run's progress). Default 1.
        address: the cluster to join, or None to start a local Ray.
        connect_timeout: seconds to reach the cluster. Default :data:`RAY_CONNECT_TIMEOUT`
            (30).

    Raises:
        ConfigError: ``workers`` < 1; Ray is not installed; the cluster's port does not
            answer within ``connect_timeout`` (and on the first unit: ``ray.init`` does not
            return within it).
    """

    name = "ray"

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        *,
        connect_timeout: float = RAY_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(workers)
        if address is None:  # a local Ray: its CPUs are this machine's
            _check_local_workers(self.workers)
        self.address = address
        self.connect_timeout = connect_timeout
        self._ray = _import_ray()
        self._deadline = time.monotonic() + connect_timeout
        if address is not None and not self._ray.is_initialized():
            _probe_ray(address, connect_timeout)
        self._started = False
        self._task: Any = None
        self._refs: weakref.WeakKeyDictionary[Future[Any], Any] = weakref.WeakKeyDictionary()

    def _start(self) -> Any:
        ray = self._ray
        if not ray.is_initialized():
            runtime_env = {"env_vars": dict(THREAD_ENV)}
            if self.address is None:
                ray.init(
                    address="local",
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env=runtime_env,
                )
            else:
                _init_within(
                    ray,
                    self.address,
                    max(self._deadline - time.monotonic(), 1.0),
                    self.connect_timeout,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env=runtime_env,
                )
            self._started = True
        if self._task is None:
            self._task = ray.remote(num_cpus=1, max_retries=0)(run_unit)
        return self._task

    def submit(self, fn: Callable[[T], R], unit: T) -> Future[R]:
        ref = self._start().remote(fn, unit)
        future: Future[R] = ref.future()
        self._refs[future] = ref
        return future

    def cancel(self, futures: Iterable[Future[Any]]) -> None:
        for future in futures:
            ref = self._refs.get(future)
            if ref is not None and not future.done():
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref)
            future.cancel()

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False
            self._task = None

    def __repr__(self) -> str:
        return f"RayExecutor(workers={self.workers}, address={self.address!r})"


def _unreachable(address: str, why: str, timeout: float | None = None) -> ConfigError:
    within = "" if timeout is None else f" within {timeout:g} s"
    return ConfigError(
        f"ray_address {address!r}: no Ray cluster answered{within} ({why}); "
        "check the address and port and that the cluster is up (`ray status` on its head "
        "node), or drop `ray_address` to start a local Ray"
    )


def _ray_endpoint(address: str) -> tuple[str, int] | None:
    """The host and port behind a Ray address (``host:port``, ``ray://host:port``,
    ``auto``), or None when it cannot be told without Ray's own lookup failing first."""
    target = address.strip()
    if target in ("auto", ""):
        try:  # RAY_ADDRESS, or the cluster last started on this machine
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address(target or "auto")
        except Exception:  # Ray's internals, or no cluster: ray.init says which
            return None
        if not found:
            return None
        target = str(found)
    if target == "local":
        return None
    target = target.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _probe_ray(address: str, timeout: float) -> None:
    """Refuse a Ray address whose port does not accept a connection within ``timeout``.

    Raises:
        ConfigError: the address names a port that refuses, or stays silent (a firewall,
            a host that is down), or a host that does not resolve.
    """
    import socket

    endpoint = _ray_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            pass
    except TimeoutError as exc:
        where = f"{endpoint[0]}:{endpoint[1]} is silent"
        raise _unreachable(address, where, timeout) from exc
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise _unreachable(address, f"{endpoint[0]}:{endpoint[1]}: {why}") from exc


def _init_within(ray: Any, address: str, wait: float, timeout: float, **kwargs: Any) -> None:
    """``ray.init(address=address, **kwargs)``, refused if it does not return in ``wait``
    seconds (what is left of the connect ``timeout``, which the message names).

    ``ray.init`` has no timeout of its own and retries a port that accepts connections but
    is not Ray's (a dashboard's, another service's) for minutes; it runs in a daemon thread
    here, which is left behind (and ends with the process) when the time is up.

    Raises:
        ConfigError: no answer within ``wait`` seconds.
    """
    box: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=connect, name="metabt-ray-init", daemon=True)
    thread.start()
    thread.join(wait)
    if thread.is_alive():
        raise _unreachable(address, "ray.init did not return", timeout)
    if "error" in box:
        raise box["error"]


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"workers must be a positive integer (units run at once), got {workers!r}; "
            "use `workers` 2 for two processes"
        )
    return workers


def _check_local_workers(workers: int) -> int:
    """Refuse more local workers than CPUs: each would be a process (or a Ray CPU) here."""
    cpus = os.cpu_count() or 1
    if workers > cpus:
        raise ConfigError(
            f"workers {workers} is more than the {cpus} CPUs of this machine; use `workers` "
            f"{cpus} or fewer (more processes than cores only slow every unit down), or a Ray "
            "cluster with `ray_address`"
        )
    return workers


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "executor 'ray' needs Ray, which is not installed; pip install metabt[ray] "
            "(or use `executor` process)"
        ) from exc
    return ray


def _check_choice(executor: str, workers: Any, ray_address: str | None) -> None:
    """Refuse an unknown executor, ``workers`` < 1, or a ``ray_address`` for another executor."""
    if executor not in EXECUTOR_NAMES:
        raise ConfigError(
            f"unknown executor {executor!r}{did_you_mean(str(executor), EXECUTOR_NAMES)}; "
            f"choose one of {', '.join(EXECUTOR_NAMES)}"
        )
    _check_workers(workers)
    if ray_address is not None and executor != "ray":
        raise ConfigError(
            f"ray_address {ray_address!r} is only used by executor 'ray', not {executor!r}; "
            "pass `executor` ray or drop `ray_address`"
        )


def make_executor(
    executor: str | Executor = "serial", workers: int = 1, ray_address: str | None = None
) -> Executor:
    """The executor called ``executor`` with ``workers`` workers, checked before any work.

    Args:
        executor: "serial", "process" or "ray" (:data:`EXECUTOR_NAMES`), or an
            :class:`Executor`, returned as it is.
        workers: units run at once (1 for "serial"). Default 1.
        ray_address: for "ray", the cluster to join; None starts a local Ray.

    Returns:
        An :class:`Executor`; use it as a context manager (``with``) so that its workers
        (and a Ray it started) are released.

    Raises:
        ConfigError: an unknown executor, ``workers`` < 1, a ``ray_address`` for another
            executor, or Ray not installed.
    """
    if isinstance(executor, Executor):
        return executor
    _check_choice(executor, workers, ray_address)
    if executor == "ray":
        return RayExecutor(workers, ray_address)
    if executor == "process":
        return ProcessExecutor(workers)
    return SerialExecutor(workers)


@dataclass(frozen=True)
class ExecutorSpec:
    """Where an experiment's units run: the executor, its workers, the Ray cluster.

    Checked when it is made (Ray's presence only when the executor is made, by
    :meth:`make`), so a bad choice is refused before any work.

    Attributes:
        kind: "serial" (this process), "process" (local worker processes) or "ray"
            (:data:`EXECUTOR_NAMES`). Default "serial".
        workers: units run at once (processes, or the CPUs of a local Ray). Default 1.
        ray_address: for "ray", the cluster to join; None starts a local Ray for the run
            and shuts it down after.

    Raises:
        ConfigError: an unknown ``kind``, ``workers`` < 1, or a ``ray_address`` for
            another executor.
    """

    kind: str = "serial"
    workers: int = 1
    ray_address: str | None = None

    def __post_init__(self) -> None:
        _check_choice(self.kind, self.workers, self.ray_address)

    def make(self) -> Executor:
        """A new executor of this spec (:func:`make_executor`); close it after the run.

        Raises:
            ConfigError: ``kind`` is "ray" and Ray is not installed.
        """
        return make_executor(self.kind, self.workers, self.ray_address)


#: The default executor spec of the experiments: every unit here, one after the other.
SERIAL = ExecutorSpec()


def executor_scope(
    executor: ExecutorSpec | Executor,
) -> contextlib.AbstractContextManager[Executor]:
    """The executor to run on, as a context: one made from a spec is closed after the run,
    one given open is left open.

    Args:
        executor: an :class:`ExecutorSpec`, or an :class:`Executor` (used as it is).

    Returns:
        A context manager that gives the :class:`Executor`.

    Raises:
        ConfigError: a spec of executor "ray" without Ray installed.
    """
    if isinstance(executor, Executor):
        return contextlib.nullcontext(executor)
    return executor.make()
