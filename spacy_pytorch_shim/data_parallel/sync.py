"""Gradient synchronisation between the ranks of a data-parallel run.

While `spacy_pytorch_shim.data_parallel.train` runs this process as one rank,
a `GradientSync` is installed as the collective of `models/collective.py`
(`gradient_sync`), and `TorchShim.finish_update` has it reduce each shim's
gradients once per step, before the optimizer math: the first call of a step
sums the gradients of every registered shim across the ranks with one
bucketed all-reduce (preceded by a small one of row masks, so that embedding
tables send only the rows a batch touched), and the calls of the other shims
in that step find their gradients already reduced. Otherwise the call
returns at once.

The sum is made equal to the gradient of the whole global batch, which is
what a one-process run computes: a component whose loss is a sum over the
batch (`torch_ner`: over tokens) contributes its gradient as it is; one whose
loss is a mean over the examples of the batch (`torch_textcat`) is first
scaled by this rank's share `n_rank / n_global` of the global batch.
"""
import time
from typing import TYPE_CHECKING, ContextManager, Dict, Iterable, List, Optional, Set, Tuple

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..models import collective

if TYPE_CHECKING:
    from ..models.torch_shim import TorchShim

LOSS_REDUCTIONS = ("sum", "mean")
# Gradients with at least this many rows (embedding tables) are sent as the
# rows that are non-zero on some rank: a batch touches few of them.
SPARSE_MIN_ROWS = 1024


class GradientSync:
    """The shims whose gradients the ranks sum, how each component's loss is
    reduced, this rank's share of the current global batch, and the time
    spent synchronising (for the benchmark)."""

    def __init__(self, shims: List[Tuple["TorchShim", str]]):
        for shim, reduction in shims:
            if reduction not in LOSS_REDUCTIONS:
                raise ValueError(f"loss reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
        self.shims: Dict[int, Tuple["TorchShim", str]] = {shim.id: (shim, r) for shim, r in shims}
        self.world_size = dist.get_world_size()
        self.local_share = 1.0
        # Shims reduced by this step's first call whose own call has not come yet.
        self.pending: set = set()
        self.seconds = 0.0
        self.n_all_reduces = 0


    # ----------------------------------------------- models.collective API
    def reduce_gradients(self, shim: "TorchShim") -> None:
        all_reduce_gradients(shim, gradients_to_sync(shim.module))

    def labels_seen(self, labels: Iterable[str], seen: Set[str]) -> Set[str]:
        """The `labels` that this rank's batch (`seen`) or another rank's has: the
        components unmask a label when its first update sees it, and the ranks
        must unmask it at the same step, as one process over the global batch
        does (every rank calls this in step, with the same `labels`)."""
        labels = list(labels)
        flags = torch.tensor([label in seen for label in labels], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return {label for label, flag in zip(labels, flags.tolist()) if flag}


def active_sync() -> Optional[GradientSync]:
    """The gradient sync of the data-parallel run this process is a rank of."""
    state = collective.current()
    return state if isinstance(state, GradientSync) else None


def sync_active() -> bool:
    """True while this process is one rank of a data-parallel run."""
    return active_sync() is not None


def gradient_sync(shims: List[Tuple["TorchShim", str]]) -> ContextManager[GradientSync]:
    """Sum the gradients of `shims` (each with its loss reduction, "sum" or
    "mean") across the ranks of the default process group inside the block:
    installs a `GradientSync` as the shims' collective (models/collective.py)."""
    if not dist.is_initialized():
        raise RuntimeError("gradient_sync needs an initialised torch.distributed process group")
    return collective.use(GradientSync(shims))


def set_local_share(share: float) -> None:
    """This rank's share of the current global batch (its examples / all)."""
    state = active_sync()
    if state is not None:
        state.local_share = share


def gradients_to_sync(module: torch.nn.Module) -> List[torch.Tensor]:
    """The `.grad` of every parameter of `module` that requires a gradient,
    in `named_parameters()` order; a parameter without one gets zeros first
    (on another rank it may have one). Call it only while `sync_active()`:
    it changes which parameters the optimizer updates."""
    grads = []
    for param in module.parameters():
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grads.append(param.grad)
    return grads


def all_reduce_gradients(shim: "TorchShim", grads: List[torch.Tensor]) -> None:
    """Make `grads` the gradient of the global batch on every rank, in place,
    when data-parallel training is active in this process; a no-op otherwise.

    `grads` must be `gradients_to_sync(shim.module)`: the parameters' own
    `.grad` tensors of every parameter that requires a gradient, in
    `named_parameters()` order, zeros where a parameter had none, so the list
    is the same on every rank. Call it before any use of the gradients
    (loss unscaling, clipping, the optimizer), once per shim and step:

        if sync_active():
            all_reduce_gradients(self, gradients_to_sync(self.module))

    The first call of a step reduces the gradients of every shim registered
    with `gradient_sync` (from their modules' `.grad`, zeros filled) in
    one bucketed all-reduce (embedding tables: only their rows that are
    non-zero on some rank, after a small all-reduce of row masks); the other
    shims' calls of that step return at once. A parameter that has no gradient on any rank is updated with a zero
    gradient (a one-process run would skip it).
    """
    state = active_sync()
    if state is None or state.world_size == 1:
        return
    if shim.id not in state.shims:
        raise RuntimeError(f"all_reduce_gradients: shim {shim.id} was not registered with gradient_sync")
    if shim.id in state.pending:
        state.pending.discard(shim.id)
        return
    start = time.perf_counter()
    # (tensors, scale) per bucket; one bucket per device and dtype, normally one.
    buckets: Dict[Tuple[torch.device, torch.dtype], Tuple[List[torch.Tensor], List[float]]] = {}
    for shim_id, (other, reduction) in state.shims.items():
        tensors = grads if shim_id == shim.id else gradients_to_sync(other.module)
        scale = state.local_share if reduction == "mean" else 1.0
        for tensor in tensors:
            bucket = buckets.setdefault((tensor.device, tensor.dtype), ([], []))
            bucket[0].append(tensor)
            bucket[1].append(scale)
    for tensors, scales in buckets.values():
        _reduce_bucket(tensors, scales)
        state.n_all_reduces += 1
    state.pending = set(state.shims) - {shim.id}
    state.seconds += time.perf_counter() - start


def _reduce_bucket(tensors: List[torch.Tensor], scales: List[float]) -> None:
    """Scale and sum `tensors` across the ranks in place with one all-reduce.
    A tensor of SPARSE_MIN_ROWS rows or more (an embedding table) takes part
    with only the rows that are non-zero on some rank, which one small
    all-reduce of row masks first agrees on: the rows a batch does not touch
    are zero on every rank and stay so."""
    rows: Dict[int, torch.Tensor] = {}
    tables = [i for i, tensor in enumerate(tensors) if tensor.dim() >= 2 and tensor.shape[0] >= SPARSE_MIN_ROWS]
    if tables:
        masks = torch.cat([_nonzero_rows(tensors[i]) for i in tables])
        masks = masks.to(tensors[tables[0]].dtype)
        dist.all_reduce(masks)
        offset = 0
        for i in tables:
            n_rows = tensors[i].shape[0]
            rows[i] = masks[offset : offset + n_rows].nonzero().squeeze(1)
            offset += n_rows
    parts = [tensor.index_select(0, rows[i]) if i in rows else tensor for i, tensor in enumerate(tensors)]
    flat = _flatten_dense_tensors(parts)
    if any(scale != 1.0 for scale in scales):
        offset = 0
        for part, scale in zip(parts, scales):
            if scale != 1.0:
                flat[offset : offset + part.numel()].mul_(scale)
            offset += part.numel()
    dist.all_reduce(flat)
    for i, (tensor, reduced) in enumerate(zip(tensors, _unflatten_dense_tensors(flat, parts))):
        if i in rows:
            tensor.index_copy_(0, rows[i], reduced)
        else:
            tensor.copy_(reduced)


def _nonzero_rows(tensor: torch.Tensor) -> torch.Tensor:
    """True for the rows that hold a non-zero (or NaN) value. Row max and
    min are the fastest test on the CPU: 4x faster than `ne(0).any(1)`."""
    rows = tensor.reshape(tensor.shape[0], -1)
    return rows.amax(dim=1).ne(0) | rows.amin(dim=1).ne(0)


def broadcast_parameters(shims: List["TorchShim"], src: int = 0) -> None:
    """Give every rank rank `src`'s parameters and buffers, one broadcast per
    device and dtype, so all ranks start from the same weights whatever
    their seeds."""
    buckets: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
    for shim in shims:
        for tensor in [*shim.module.parameters(), *shim.module.buffers()]:
            buckets.setdefault((tensor.device, tensor.dtype), []).append(tensor.data)
    with torch.no_grad():
        for tensors in buckets.values():
            flat = _flatten_dense_tensors(tensors)
            dist.broadcast(flat, src=src)
            for tensor, value in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
                tensor.copy_(value)
