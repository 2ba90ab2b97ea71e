"""Processes that each hold the model: one a core, so that a batch scores on every core.

Scoring a chunk (the contract's checks, the features, the trees) is mostly Python holding the GIL: threads in one
process take turns, so a run used one core and a little (measured: 1.1 cores of 2). The scoring processes are
forked from the batch process once its model is loaded, as PySpark's daemon forks its Python workers: they start
in milliseconds, with the model and every module already in memory (shared copy-on-write), where a fresh
interpreter would import for seconds. What each process holds (the batch job, its model) is inherited at the fork,
never pickled: a task carries only its arguments (a chunk, or which slice to score) and returns only what its caller
needs.

Forked before the run opens its readers and writers (the fork copies only the thread that calls it), each process
runs the model on its own OpenMP threads (one by default: libgomp's thread pool is not safe across a fork, and
the processes are the parallelism), and dies with the batch process (Linux's parent-death signal): a killed run
leaves no process behind. Where `fork` is not available (Windows, macOS' default), one process scores.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import joblib
from threadpoolctl import threadpool_limits

PR_SET_PDEATHSIG = 1  # linux/prctl.h

_held: object = None  # what a scoring process inherited at its fork (set once, when it starts)


def usable_cores() -> int:
    """The cores this process may use: the fewest of its CPU affinity and its cgroup's CPU quota (a container's
    CPU limit, which the affinity does not show), as joblib counts them."""
    return joblib.cpu_count()


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class ScoringProcesses:
    """`processes` forked processes, each holding `held`; `submit(task, *args)` runs `task(held, *args)` in one of
    them. A context manager."""

    def __init__(self, held: object, processes: int, threads: int = 1) -> None:
        context = multiprocessing.get_context("fork")
        self.pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start,
                                        initargs=(held, threads, os.getpid()))  # fmt: skip
        # Fork every process now, from this thread, before the run starts threads of its own (the pool forks them
        # all at its first task); the parent-death signal follows the thread that forked. Garbage is collected
        # first and what is left frozen, so that a scoring process never finalizes an object of its parent's: a
        # connection closed there would end the parent's PostgreSQL session or break its SQLite locks
        # (sqlite.org/howtocorrupt.html, 2.6).
        gc.collect()
        gc.freeze()
        try:
            self.pool.submit(int).result()
        finally:
            gc.unfreeze()

    def submit(self, task: Callable, *args: object) -> Future:
        """`task(held, *args)` in the first free process: `task` is a module-level function (pickled by name)."""
        return self.pool.submit(_call, task, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ScoringProcesses:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _start(held: object, threads: int, parent: int) -> None:
    global _held
    _die_with_parent(parent)
    threadpool_limits(threads, user_api="openmp")  # for the life of the process
    _held = held


def _call(task: Callable, *args: object) -> object:
    return task(_held, *args)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the batch process ends, however it ends (SIGKILL included)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
