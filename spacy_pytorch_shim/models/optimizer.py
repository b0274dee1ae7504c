"""Thinc's optimizer semantics as one multi-tensor update per step.

Thinc's `Optimizer.__call__` updates one parameter at a time with its own
small kernels; on a GPU that is a few launches per tensor, and on any device
a fixed Python cost per tensor. `fused_step` does the same arithmetic (Adam
with Thinc's bias correction, L2 as a gradient term or as weight decay,
per-parameter gradient clipping, SGD, parameter averages with Thinc's decay)
over all parameters at once: torch's fused Adam kernel where the device has
it, `_foreach_*` kernels for the rest. The state stays
where spaCy and Thinc look for it: `optimizer.mom1`, `mom2`, `averages` and
`nr_update`, keyed `(shim.id, name)`, hold arrays that share memory with the
torch tensors the update writes (numpy on the CPU, cupy on CUDA), so
`nlp.use_params(optimizer.averages)`, `model-best` and resizing see every step
without a copy.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy
import torch
from thinc.api import Optimizer
from thinc.util import torch2xp, xp2torch

# Thinc's ops.update_averages caps the averaging decay here.
MAX_AVERAGE_DECAY = 0.9999

Key = Tuple[int, str]
# Per optimizer store and key: the array in the store and the tensor over it.
StateCache = Dict[Tuple[int, Key], Tuple[Any, torch.Tensor]]


def supports_fused(optimizer: Any) -> bool:
    """Whether `fused_step` reproduces this optimizer: Thinc's own Adam and
    SGD. RAdam, subclasses and other callables take the per-parameter path."""
    if type(optimizer) is not Optimizer or optimizer.use_radam:
        return False
    adam = optimizer.b1 > 0.0 and optimizer.b2 > 0.0
    sgd = optimizer.b1 == 0.0 and optimizer.b2 == 0.0
    return adam or sgd


def fused_step(
    optimizer: Optimizer,
    shim_id: int,
    names: Sequence[str],
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lr_scales: Sequence[float],
    cache: StateCache,
) -> None:
    """Update `params` in place from `grads`, exactly as calling `optimizer`
    on each `(shim_id, name)` with its `lr_scale` would. Gradients are used
    as scratch space. Parameters are grouped by update count and learn-rate
    scale (normally one group), since both enter the step as scalars."""
    groups: Dict[Tuple[int, float], List[int]] = {}
    for i, name in enumerate(names):
        key = (shim_id, name)
        optimizer.nr_update[key] += 1
        groups.setdefault((optimizer.nr_update[key], lr_scales[i]), []).append(i)
    for (nr_upd, lr_scale), members in groups.items():
        _step_group(
            optimizer,
            shim_id,
            [names[i] for i in members],
            [params[i] for i in members],
            [grads[i] for i in members],
            nr_upd,
            lr_scale,
            cache,
        )


def _step_group(
    optimizer: Optimizer,
    shim_id: int,
    names: List[str],
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    nr_upd: int,
    lr_scale: float,
    cache: StateCache,
) -> None:
    flat_params = [p.view(-1) for p in params]
    flat_grads = [g.reshape(-1) for g in grads]
    L2 = optimizer.L2
    if L2 != 0 and not optimizer.L2_is_weight_decay:
        torch._foreach_add_(flat_grads, flat_params, alpha=L2)
    if optimizer.grad_clip:
        # Per parameter, like ops.clip_gradient: scaled to the threshold when
        # its norm reaches it (a factor of exactly 1 otherwise). No host sync.
        norms = torch.stack(torch._foreach_norm(flat_grads))
        factors = (optimizer.grad_clip / norms).clamp_(max=1.0)
        torch._foreach_mul_(flat_grads, list(factors.unbind()))
    learn_rate = optimizer.learn_rate * lr_scale
    if optimizer.b1 > 0.0:
        mom1 = [_state(cache, optimizer.mom1, (shim_id, n), p, flat=True) for n, p in zip(names, params)]
        mom2 = [_state(cache, optimizer.mom2, (shim_id, n), p, flat=True) for n, p in zip(names, params)]
        adam = _fused_adam if _has_fused_adam(params[0].device) else _foreach_adam
        adam(optimizer, flat_params, flat_grads, mom1, mom2, nr_upd, learn_rate)
    else:
        # Multiply, then subtract, as numpy does: a fused multiply-add rounds
        # differently, and the difference grows over the steps.
        torch._foreach_mul_(flat_grads, learn_rate)
        torch._foreach_sub_(flat_params, flat_grads)
    if L2 != 0 and optimizer.L2_is_weight_decay:
        # After the step and with the plain learn rate, as Thinc does (torch's
        # AdamW decays before the step). The product goes into the spent
        # gradients (0 + c * p rounds as c * p does): no table-sized temporary.
        torch._foreach_zero_(flat_grads)
        torch._foreach_add_(flat_grads, flat_params, alpha=learn_rate * L2)
        torch._foreach_sub_(flat_params, flat_grads)
    if optimizer.averages is not None:
        averages = [_state(cache, optimizer.averages, (shim_id, n), p, flat=False) for n, p in zip(names, params)]
        decay = min((1.0 + nr_upd) / (10.0 + nr_upd), MAX_AVERAGE_DECAY)
        torch._foreach_lerp_(averages, list(params), 1.0 - decay)


def _fused_adam(
    optimizer: Optimizer,
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    mom1: List[torch.Tensor],
    mom2: List[torch.Tensor],
    nr_upd: int,
    learn_rate: float,
) -> None:
    """torch's one-pass Adam kernel, given what makes its step Thinc's.
    Thinc's CPU kernel computes 1 - beta in float32, so the betas are
    rounded to float32 first. Thinc scales the learn rate by
    sqrt(1 - b2^t) / (1 - b1^t) (in double, of the unrounded betas) and adds
    eps to sqrt(mom2); torch divides the learn rate by its own (1 - b1^t) and
    sqrt(mom2) by sqrt(1 - b2^t) before adding eps: the learn rate and eps
    given to torch undo its corrections and apply Thinc's."""
    b1, b2 = optimizer.b1, optimizer.b2
    b1_f32, b2_f32 = float(numpy.float32(b1)), float(numpy.float32(b2))
    torch_fix1, torch_fix2 = 1.0 - b1_f32**nr_upd, 1.0 - b2_f32**nr_upd
    thinc_lr = learn_rate * (1.0 - b2**nr_upd) ** 0.5 / (1.0 - b1**nr_upd)
    step = torch.full((), float(nr_upd), dtype=torch.float32, device=params[0].device)
    torch._fused_adam_(
        params,
        grads,
        mom1,
        mom2,
        [],
        [step] * len(params),
        lr=thinc_lr * torch_fix1 / torch_fix2**0.5,
        beta1=b1_f32,
        beta2=b2_f32,
        weight_decay=0.0,
        eps=optimizer.eps / torch_fix2**0.5,
        amsgrad=False,
        maximize=False,
    )


def _foreach_adam(
    optimizer: Optimizer,
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    mom1: List[torch.Tensor],
    mom2: List[torch.Tensor],
    nr_upd: int,
    learn_rate: float,
) -> None:
    """Thinc's Adam in multi-tensor kernels, for devices (or torch versions)
    without the fused kernel."""
    b1, b2 = optimizer.b1, optimizer.b2
    f32 = numpy.float32
    torch._foreach_mul_(mom1, float(f32(b1)))
    torch._foreach_add_(mom1, grads, alpha=float(f32(1) - f32(b1)))
    torch._foreach_mul_(mom2, float(f32(b2)))
    torch._foreach_addcmul_(mom2, grads, grads, value=float(f32(1) - f32(b2)))
    denom = torch._foreach_sqrt(mom2)
    torch._foreach_add_(denom, optimizer.eps)
    lr = learn_rate * (1.0 - b2**nr_upd) ** 0.5 / (1.0 - b1**nr_upd)
    torch._foreach_addcdiv_(params, mom1, denom, value=-lr)


_FUSED_ADAM: Dict[str, bool] = {}


def _has_fused_adam(device: torch.device) -> bool:
    """Whether torch has its fused Adam kernel for this device type (CPU from
    torch 2.4, CUDA), found out once per device type."""
    if device.type not in _FUSED_ADAM:
        try:
            one = torch.ones(1, device=device)
            zero = torch.zeros(1, device=device)
            torch._fused_adam_(
                [one.clone()], [one], [zero.clone()], [zero.clone()], [], [one.clone()],
                lr=0.0, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
            )
            _FUSED_ADAM[device.type] = True
        except (AttributeError, RuntimeError, NotImplementedError):
            _FUSED_ADAM[device.type] = False
    return _FUSED_ADAM[device.type]


def _state(cache: StateCache, store: Dict[Key, Any], key: Key, param: torch.Tensor, *, flat: bool) -> torch.Tensor:
    """The tensor behind `store[key]`, created (zeros) where Thinc would
    create it: moments flat, averages shaped like the parameter. An array
    put in the store by anyone else (resizing, a loaded optimizer) is taken
    over without a copy where torch can share its memory."""
    array = store.get(key)
    cached = cache.get((id(store), key))
    if cached is not None and cached[0] is array:
        return cached[1]
    shape = (param.numel(),) if flat else tuple(param.shape)
    if array is None:
        tensor = torch.zeros(shape, dtype=torch.float32, device=param.device)
    else:
        if tuple(array.shape) != shape or array.dtype != numpy.float32:
            what = "moments" if flat else "averages"
            raise ValueError(
                f"The optimizer's {what} for parameter '{key[1]}' have shape "
                f"{tuple(array.shape)} ({array.dtype}), but the parameter needs {shape} "
                f"(float32): was the parameter resized without its optimizer state?"
            )
        tensor = xp2torch(array, device=param.device)
    if array is None or tensor.data_ptr() != _array_ptr(array):
        # New, or an array torch could not wrap in place: from now on the
        # store holds a view of our tensor.
        tensor = tensor if array is None else tensor.clone()
        array = torch2xp(tensor)
        store[key] = array
    cache[(id(store), key)] = (array, tensor)
    return tensor


def _array_ptr(array: Any) -> Optional[int]:
    if isinstance(array, numpy.ndarray):
        return array.__array_interface__["data"][0]
    data = getattr(array, "data", None)  # cupy
    return getattr(data, "ptr", None)
