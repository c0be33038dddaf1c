"""executors: units in order, one thread each, seeded alike on every engine; bad choices refused."""

from __future__ import annotations

import math
import os
import random
import sys
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from metabt.errors import ConfigError
from metabt.experiments.executors import (
    EXECUTOR_NAMES,
    SERIAL,
    ExecutorSpec,
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    executor_scope,
    make_executor,
    run_unit,
)


def _environment(tag: int) -> tuple[int, int, int, float, float]:
    """What a unit sees: its tag, torch threads, the most BLAS/OpenMP threads, two draws."""
    blas = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    return tag, torch.get_num_threads(), blas, float(np.random.random()), float(torch.rand(1))  # noqa: NPY002


def test_make_executor_refuses_bad_choices_and_names_the_fix(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown executor 'proces' \(did you mean 'process'"):
        make_executor("proces")
    for workers in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="workers must be a positive integer"):
            make_executor("process", workers)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="only used by executor 'ray'"):
        make_executor("process", 2, "auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install metabt\[ray\]"):
        make_executor("ray", 2)
    given = ProcessExecutor(2)
    assert make_executor(given) is given
    assert isinstance(make_executor(), SerialExecutor) and EXECUTOR_NAMES[0] == "serial"


def test_an_executor_spec_is_checked_when_made_and_its_executor_closed_after(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown executor 'proces' \(did you mean 'process'"):
        ExecutorSpec("proces")
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        ExecutorSpec("process", 0)
    with pytest.raises(ConfigError, match="only used by executor 'ray'"):
        ExecutorSpec("serial", ray_address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray's presence: when the executor is made
    spec = ExecutorSpec("ray", 2)
    with pytest.raises(ConfigError, match=r"pip install metabt\[ray\]"):
        spec.make()
    assert SERIAL == ExecutorSpec() and ExecutorSpec("process", 2).make().workers == 2
    closed: list[bool] = []
    monkeypatch.setattr(ProcessExecutor, "close", lambda self: closed.append(True))
    with executor_scope(ExecutorSpec("process", 2)) as made:  # made here: closed after
        assert isinstance(made, ProcessExecutor)
    given = ProcessExecutor(2)
    with executor_scope(given) as same:  # given open: left open
        assert same is given
    assert closed == [True]


def test_run_unit_limits_threads_and_seeds_then_restores_the_caller():
    torch.set_num_threads(2)
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    try:
        _, threads, blas, draw, torch_draw = run_unit(_environment, 0)
        assert threads == 1 and blas == 1
        assert (draw, torch_draw) == run_unit(_environment, 0)[3:]  # the same fixed seed
        assert torch.get_num_threads() == 2  # the caller's settings are back
        assert random.random() == expected_next  # and its random state untouched
    finally:
        torch.set_num_threads(1)


def test_serial_executor_shows_the_units_done_unless_told_not_to(capsys):
    with SerialExecutor() as ex:
        assert ex.map(math.sqrt, [4.0, 9.0, 16.0], desc="units") == [2.0, 3.0, 4.0]
        assert "3/3" in capsys.readouterr().err
        assert ex.map(math.sqrt, [1.0], progress=False) == [1.0]
        assert capsys.readouterr().err == ""
        assert ex.map(math.sqrt, []) == []


def test_serial_submit_runs_the_unit_now_and_keeps_its_exception_in_the_future():
    with SerialExecutor() as ex:
        done = ex.submit(_environment, 3)
        assert done.done() and done.result() == run_unit(_environment, 3)
        failed = ex.submit(math.sqrt, -1.0)  # does not raise here: result() does
        assert ex.wait([failed, done]) == {failed, done}
        with pytest.raises(ValueError, match="math domain error"):
            failed.result()
        with pytest.raises(ValueError, match="math domain error"):  # map stops at it
            ex.map(math.sqrt, [1.0, -1.0, 4.0], progress=False)


@pytest.mark.slow
def test_process_executor_returns_in_order_one_thread_per_worker_and_raises():
    with ProcessExecutor(2) as ex:
        seen = ex.map(_environment, list(range(6)), progress=False)
        assert [s[0] for s in seen] == list(range(6))  # the order of the units
        assert {s[1:] for s in seen} == {run_unit(_environment, 0)[1:]}  # same as here
        with pytest.raises(ValueError, match="math domain error"):
            ex.map(math.sqrt, [1.0, -1.0, 4.0], progress=False)
        assert ex.map(math.sqrt, [4.0], progress=False) == [2.0]  # the pool is reused
        # submit: futures as the units finish; the ones not started can be cancelled
        slow = [ex.submit(time.sleep, 1.0) for _ in range(2)]  # both workers busy
        quick, queued = ex.submit(math.sqrt, 9.0), ex.submit(math.sqrt, 16.0)
        ex.cancel([queued])
        assert queued.cancelled() and quick.result() == 3.0
        assert all(f.result() is None for f in slow)
        pending = {ex.submit(math.sqrt, x) for x in (1.0, 4.0)}
        while pending:
            pending -= ex.wait(pending)
        # a worker that dies is reported as such, and the pool released
        with pytest.raises(RuntimeError, match="a worker process of executor 'process' died"):
            ex.wait([ex.submit(os._exit, 1)])
        assert ex._pool is None
        assert ex.submit(math.sqrt, 4.0).result() == 2.0  # a new pool
    assert ex._pool is None


@pytest.mark.slow
def test_ray_executor_starts_a_local_ray_returns_in_order_and_shuts_it_down(ray):
    assert not ray.is_initialized()
    with RayExecutor(2) as ex:
        seen = ex.map(math.sqrt, [16.0, 1.0, 9.0], progress=False)
        assert seen == [4.0, 1.0, 3.0]
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
        blas = ex.map(math.factorial, [3, 4], progress=False)
        assert blas == [6, 24]
        with pytest.raises(ValueError, match="math domain error"):
            ex.map(math.sqrt, [-1.0], progress=False)
        assert ex.submit(math.sqrt, 25.0).result() == 5.0  # a task's future
        with pytest.raises(ValueError, match="math domain error"):
            ex.submit(math.sqrt, -4.0).result()
        busy = [ex.submit(time.sleep, 2.0) for _ in range(2)]
        queued = ex.submit(time.sleep, 30.0)
        ex.cancel([queued])  # cancels the task, not only its future
        assert queued.cancelled() and all(f.result() is None for f in busy)
    assert not ray.is_initialized()


_ORPHAN_SCRIPT = """
import time
from metabt.experiments.executors import ProcessExecutor
with ProcessExecutor(1) as ex:
    future = ex.submit(time.sleep, 300.0)
    while not ex._pool._processes:
        time.sleep(0.05)
    print(*ex._pool._processes, flush=True)
    future.result()
"""


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_exits_when_the_run_that_started_it_is_killed():
    import signal
    import subprocess

    run = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert run.stdout is not None
        (worker,) = map(int, run.stdout.readline().split())  # it runs a 300 s unit
        assert _alive(worker)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived the killed run"
    finally:
        run.kill()


def test_ray_addresses_are_read_as_host_and_port():
    from metabt.experiments.executors import _ray_endpoint

    assert _ray_endpoint("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert _ray_endpoint("ray://head.example:10001") == ("head.example", 10001)
    assert _ray_endpoint("[::1]:6379") == ("::1", 6379)
    assert _ray_endpoint("local") is None and _ray_endpoint("head-without-port") is None


def test_an_unreachable_ray_address_is_refused_at_once_not_retried_for_minutes():
    """Ray retries an address whose port refuses for minutes; the executor tries the port
    itself first and names the address, the reason and the fix."""
    pytest.importorskip("ray")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        RayExecutor(1, "127.0.0.1:1", connect_timeout=2.0)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith("ray_address '127.0.0.1:1': no Ray cluster answered (127.0.0.1:1")
    assert "refused" in message and "drop `ray_address`" in message
    with pytest.raises(ConfigError, match=r"ray_address 'ray://127.0.0.1:1'"):
        ExecutorSpec("ray", 1, "ray://127.0.0.1:1").make()


def test_a_port_that_is_not_rays_is_refused_when_ray_init_does_not_return(tmp_path):
    """A port that accepts connections but is not Ray's (a dashboard's, say): ray.init
    would hang; it is given the rest of the connect timeout. In a child process, so the
    abandoned ray.init leaves this one's Ray untouched."""
    pytest.importorskip("ray")
    code = (
        "import socket, sys, time\n"
        "import ray\n"
        "from metabt.experiments.executors import RayExecutor\n"
        "from metabt.errors import ConfigError\n"
        "server = socket.socket(); server.bind(('0.0.0.0', 0)); server.listen(8)\n"
        "address = f'127.0.0.1:{server.getsockname()[1]}'\n"
        "start = time.monotonic()\n"
        "executor = RayExecutor(1, address, connect_timeout=2.0)\n"
        "try:\n"
        "    executor.submit(abs, -1)\n"
        "except ConfigError as exc:\n"
        "    print(round(time.monotonic() - start, 1), exc)\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    seconds, _, message = done.stdout.strip().partition(" ")
    assert 1.9 <= float(seconds) < 10, done.stdout + done.stderr[-2000:]
    assert "no Ray cluster answered within 2 s (ray.init did not return)" in message
