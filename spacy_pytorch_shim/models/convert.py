"""Default conversions between Thinc's data types and torch tensors.

The signatures are Thinc's (`PyTorchWrapper_v2`), so converters written for
Thinc work here too:

    convert_inputs(model, X, is_train) -> (ArgsKwargs, get_dX)
    convert_outputs(model, (X, Ytorch), is_train) -> (Y, get_dYtorch)

Inputs, as Thinc's default converts them: an array is one argument, a list
or tuple is several positional arguments, a dict or `ArgsKwargs` keyword
arguments (arrays nested in them become tensors, anything else is passed as
it is); the gradient comes back in the same structure (a tuple for a list, as
Thinc's). Beyond Thinc's: `Ragged` is passed to the module as
`(data, lengths)`, `Padded` as `(data, lengths)` with data shaped
`(seq_len, batch, ...)`, and `convert_inputs=convert_list_inputs` passes a
list of arrays as one argument (a list of tensors). Float inputs receive
gradients; integer inputs (token ids) are passed without asking for one
(Thinc's would fail on them).
Outputs: tensors (or lists/tuples of tensors) become arrays. A module whose
output rows line up with a `Ragged` (or `Padded`) input's rows returns
`Ragged` (`Padded`) with `convert_outputs=convert_ragged_outputs`
(`convert_padded_outputs`): row counts alone cannot tell (a batch of one-token
docs has as many docs as tokens), so this is never guessed.
"""
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy
import torch
from thinc.api import Model
from thinc.types import ArgsKwargs, Padded, Ragged
from thinc.util import convert_recursive, is_xp_array, torch2xp, xp2torch


def _is_float(array: Any) -> bool:
    return array.dtype.kind == "f"


def _to_torch(array: Any, is_train: bool, device: torch.device) -> torch.Tensor:
    return _as_tensor(array, device, requires_grad=is_train and _is_float(array))


def _as_tensor(array: Any, device: torch.device, requires_grad: bool = False) -> torch.Tensor:
    """xp2torch(array, requires_grad=requires_grad, device=device)."""
    if type(array) is numpy.ndarray and array.flags.writeable:
        # What xp2torch does for numpy, without its detour through DLPack.
        try:
            tensor = torch.from_numpy(array)
        except (TypeError, ValueError):
            pass
        else:
            if tensor.device != device:
                tensor = tensor.to(device)
            return tensor.requires_grad_() if requires_grad else tensor
    return xp2torch(array, requires_grad=requires_grad, device=device)


def to_array(tensor: torch.Tensor) -> Any:
    """torch2xp(tensor), with a short path for CPU tensors."""
    if tensor.device.type == "cpu":
        return tensor.detach().numpy()
    return torch2xp(tensor)


def _input_grad(tensor: torch.Tensor, like: Any) -> Any:
    """The gradient for an input, in the input's own array type."""
    if not tensor.requires_grad:
        return None
    if tensor.grad is None:
        return like * 0
    grad = to_array(tensor.grad)
    return grad if type(grad) is type(like) else type(like)(grad)


def convert_torch_inputs(model: Model, X: Any, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    device = model.shims[0].device
    if isinstance(X, Ragged):
        data = _to_torch(X.dataXd, is_train, device)
        lengths = xp2torch(X.lengths, device=device)

        def backprop_ragged(_: Any) -> Optional[Ragged]:
            grad = _input_grad(data, X.dataXd)
            return None if grad is None else Ragged(grad, X.lengths)

        return ArgsKwargs(args=(data, lengths), kwargs={}), backprop_ragged
    if isinstance(X, Padded):
        data = _to_torch(X.data, is_train, device)
        lengths = xp2torch(X.lengths, device=device)

        def backprop_padded(_: Any) -> Optional[Padded]:
            grad = _input_grad(data, X.data)
            return None if grad is None else Padded(grad, X.size_at_t, X.lengths, X.indices)

        return ArgsKwargs(args=(data, lengths), kwargs={}), backprop_padded
    if not isinstance(X, (ArgsKwargs, dict, list, tuple)) and not is_xp_array(X):
        raise TypeError(
            f"TorchWrapper's default input conversion takes an array, a list or tuple "
            f"(positional arguments), a dict or ArgsKwargs (keyword arguments), Ragged "
            f"or Padded, not {type(X).__name__}: pass convert_inputs= to TorchWrapper "
            f"for other inputs"
        )
    made: Dict[int, Any] = {}  # id(tensor) -> the array it was made from

    def to_torch(array: Any) -> torch.Tensor:
        tensor = _to_torch(array, is_train, device)
        made[id(tensor)] = array
        return tensor

    converted = convert_recursive(is_xp_array, to_torch, X)

    def backprop(_: Any) -> Any:
        # The gradients of the tensors made here, in the structure of X.
        return convert_recursive(
            lambda t: isinstance(t, torch.Tensor) and id(t) in made,
            lambda t: _input_grad(t, made[id(t)]),
            converted,
        )

    if isinstance(converted, ArgsKwargs):
        return converted, backprop
    if isinstance(converted, dict):
        return ArgsKwargs(args=(), kwargs=converted), backprop
    if isinstance(converted, (list, tuple)):
        return ArgsKwargs(args=tuple(converted), kwargs={}), lambda d: tuple(backprop(d))
    return ArgsKwargs(args=(converted,), kwargs={}), backprop


def convert_list_inputs(model: Model, X: List[Any], is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    """A list of arrays (List[Floats2d]) as *one* argument, a list of tensors;
    its gradient is a list again. (The default passes a list as several
    positional arguments, as Thinc's PyTorchWrapper_v2 does.)"""
    device = model.shims[0].device
    tensors = [_to_torch(x, is_train, device) for x in X]

    def backprop_list(_: Any) -> List[Any]:
        return [_input_grad(t, x) for t, x in zip(tensors, X)]

    return ArgsKwargs(args=(tensors,), kwargs={}), backprop_list


def convert_torch_outputs(model: Model, X_Ytorch: Tuple[Any, Any], is_train: bool) -> Tuple[Any, Callable]:
    X, Ytorch = X_Ytorch
    flat_outputs, rebuild = _flatten_tensors(Ytorch)
    arrays = [to_array(t) for t in flat_outputs]

    def backprop(dY: Any) -> ArgsKwargs:
        d_flat = _gradient_arrays(dY)
        device = flat_outputs[0].device
        pairs = [
            (y, _as_tensor(d, device).view_as(y))
            for y, d in zip(flat_outputs, d_flat)
            if y.requires_grad and d is not None
        ]
        return ArgsKwargs(
            args=([y for y, _ in pairs],),
            kwargs={"grad_tensors": [d for _, d in pairs]},
        )

    return rebuild(arrays), backprop


def convert_ragged_outputs(model: Model, X_Ytorch: Tuple[Ragged, Any], is_train: bool) -> Tuple[Ragged, Callable]:
    """One output row per row of the Ragged input: Ragged with its lengths."""
    X, Ytorch = X_Ytorch
    Y, backprop = convert_torch_outputs(model, (X, Ytorch), is_train)
    _check_rows(Y, X.dataXd.shape[0], "Ragged")
    return Ragged(Y, X.lengths), lambda dY: backprop(dY.dataXd)


def convert_padded_outputs(model: Model, X_Ytorch: Tuple[Padded, Any], is_train: bool) -> Tuple[Padded, Callable]:
    """Output shaped like the Padded input's (seq_len, batch, ...): Padded."""
    X, Ytorch = X_Ytorch
    Y, backprop = convert_torch_outputs(model, (X, Ytorch), is_train)
    _check_rows(Y, X.data.shape[:2], "Padded")
    return Padded(Y, X.size_at_t, X.lengths, X.indices), lambda dY: backprop(dY.data)


def _check_rows(Y: Any, expected: Any, kind: str) -> None:
    leading = Y.shape[: len(expected)] if isinstance(expected, tuple) else Y.shape[0]
    if leading != expected:
        raise ValueError(
            f"The torch module returned shape {tuple(Y.shape)}, which does not line up "
            f"with the {kind} input ({expected}): use the default convert_outputs"
        )


def _flatten_tensors(Y: Any) -> Tuple[List[torch.Tensor], Callable[[List[Any]], Any]]:
    if isinstance(Y, torch.Tensor):
        return [Y], lambda arrays: arrays[0]
    if isinstance(Y, (list, tuple)) and all(isinstance(y, torch.Tensor) for y in Y):
        kind = type(Y)
        return list(Y), lambda arrays: kind(arrays) if kind is tuple else list(arrays)
    raise TypeError(
        f"TorchWrapper's default output conversion takes a tensor or a list/tuple "
        f"of tensors from the module, not {type(Y).__name__}: pass convert_outputs= "
        f"to TorchWrapper for other outputs"
    )


def _gradient_arrays(dY: Any) -> List[Any]:
    if isinstance(dY, (list, tuple)):
        return list(dY)
    return [dY]
