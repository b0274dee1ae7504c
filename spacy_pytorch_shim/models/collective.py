"""The hook through which a data-parallel run reaches the shims and the
components, so that neither imports the training command: the run installs
its collective with `use(...)` for the duration of its loop, and the core
asks `current()` at the two points where the ranks must agree.

Outside such a run `current()` is None and nothing is synchronised.
"""
import contextlib
from typing import Iterable, Iterator, Optional, Protocol, Set


class Collective(Protocol):
    """What the core needs from the ranks of a data-parallel run."""

    def reduce_gradients(self, shim) -> None:
        """Make the `.grad` of `shim.module`'s parameters the gradient of the
        global batch, before any use of them (called once per shim and step,
        from `TorchShim.finish_update`)."""

    def labels_seen(self, labels: Iterable[str], seen: Set[str]) -> Set[str]:
        """The `labels` that this rank's batch (`seen`) or another rank's has:
        a masked label is unmasked on every rank at the same step."""


_current: Optional[Collective] = None


def current() -> Optional[Collective]:
    """The installed collective, or None outside a data-parallel run."""
    return _current


@contextlib.contextmanager
def use(collective: Collective) -> Iterator[Collective]:
    """Install `collective` for the duration of the block (not nested: one
    process is one rank of at most one run)."""
    global _current
    if _current is not None:
        raise RuntimeError("A collective is already installed: one process is one rank of one data-parallel run")
    _current = collective
    try:
        yield collective
    finally:
        _current = None


__all__ = ["Collective", "current", "use"]
