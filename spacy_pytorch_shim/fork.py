"""Make torch safe to use in forked worker processes (`nlp.pipe(n_process=...)`).

spaCy's `nlp.pipe(texts, n_process=N)` starts its workers with Python's
default multiprocessing start method, which is `fork` on Linux. The CPU build
of torch runs its intra-op parallelism on OpenMP (GNU libgomp), and libgomp is
not fork-safe: once the parent has run one parallel region (any matmul big
enough for MKL or ATen to split over several threads), a forked child
inherits libgomp's bookkeeping of that thread team but not the threads. The
first torch op in the child that opens a parallel region then waits forever
at the team barrier (`gomp_team_barrier_wait_end`, reached from e.g.
`mkl_blas_sgemv_omp` in a `torch.nn.Linear`). `nlp.pipe` hangs with no error.

The guard below registers an `os.register_at_fork(after_in_child=...)` hook
that sets torch's intra-op thread count to 1 in every forked child. With one
thread, torch (`at::parallel_for`), MKL and oneDNN run inline on the calling
thread and never touch the stale libgomp team, so the child cannot deadlock.
This is also what torch's own `DataLoader` does in its worker processes, and
one thread per worker is the right setting for `n_process` workers anyway:
the workers already use the cores, more threads each would oversubscribe them.
The parent process keeps its thread settings.

`install_fork_guard()` runs when `spacy_pytorch_shim` is imported and is
idempotent: the hook is registered at most once per process.
`remove_fork_guard()` turns the hook off again (it cannot be unregistered, so
it becomes a no-op); that is for tests, and for users who manage threads in
their workers themselves.

Limits: the hook covers the thread that forked (the one that runs spaCy's
worker loop). Threads that a child starts itself begin with OpenMP's default
thread count; call `torch.set_num_threads(1)` in them before running torch ops.
The `spawn` and `forkserver` start methods are not affected by any of this.
"""
import os

import torch

_registered = False
_enabled = False


def _limit_threads_in_child() -> None:
    if not _enabled:
        return
    try:
        torch.set_num_threads(1)
    except Exception:  # pragma: no cover - never let a fork hook raise
        pass


def install_fork_guard() -> None:
    """Set torch to one intra-op thread in every process forked from now on.
    Safe to call any number of times."""
    global _registered, _enabled
    _enabled = True
    if _registered or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_limit_threads_in_child)
    _registered = True


def remove_fork_guard() -> None:
    """Stop limiting the threads of forked children (the hook stays registered
    but does nothing)."""
    global _enabled
    _enabled = False


def fork_guard_active() -> bool:
    return _registered and _enabled


install_fork_guard()
