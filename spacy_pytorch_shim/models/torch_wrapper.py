"""TorchWrapper: a Thinc Model around any torch.nn.Module."""
from typing import Any, Callable, Optional, Tuple

import torch
from thinc.api import Model
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler
from thinc.types import Padded, Ragged

from .convert import convert_torch_inputs, convert_torch_outputs
from .resize import RESIZABLE_TYPES, output_width, resize_input, resize_output
from .serialization import CheckedModel
from .torch_shim import TorchShim


def TorchWrapper(
    module: torch.nn.Module,
    *,
    convert_inputs: Optional[Callable] = None,
    convert_outputs: Optional[Callable] = None,
    output_layer: Optional[str] = None,
    input_layer: Optional[str] = None,
    output_bias_fill: float = 0.0,
    output_dropout: bool = False,
    mixed_precision: bool = False,
    grad_scaler: Optional[PyTorchGradScaler] = None,
    device: Optional[torch.device] = None,
    nI: Optional[int] = None,
    nO: Optional[int] = None,
    name: str = "torch",
) -> Model[Any, Any]:
    """Wrap `module` so that it has Thinc's API: `begin_update` with a backprop
    callback, `finish_update(optimizer)` through the Thinc optimizer,
    `use_params(optimizer.averages)`, resizing and safe serialization.

    module: the torch module. With the default conversions, a module mapping one
        tensor to one tensor needs nothing else.
    convert_inputs, convert_outputs: conversions with Thinc's PyTorchWrapper_v2
        signatures; the defaults (in `spacy_pytorch_shim.models.convert`)
        convert as Thinc's do (a list or tuple: positional arguments, a dict
        or ArgsKwargs: keyword arguments), plus Ragged and Padded.
    output_layer, input_layer: dotted names of the `torch.nn.Linear` or
        `torch.nn.Embedding` submodules that `model.attrs["resize_output"]` and
        `model.attrs["resize_input"]` resize.
    output_bias_fill: the bias given to output rows added by `resize_output`.
    output_dropout: apply the caller's dropout rate as a mask on the outgoing
        activations (and the same mask on the incoming gradient) instead of
        handing it to the dropout modules inside `module`.
    mixed_precision: run the forward pass under torch.autocast, with gradient
        scaling on CUDA.
    grad_scaler: the loss scaler for mixed precision (Thinc's
        PyTorchGradScaler); by default one with Thinc's settings.
    nI, nO: the widths Thinc records in `dims`; with `output_layer`, `nO` is
        the layer's output width (and follows `resize_output`).

    The model's `from_bytes`/`from_disk` check everything before loading
    anything (`serialization.CheckedModel`).
    """
    attrs = {
        "convert_inputs": convert_inputs or convert_torch_inputs,
        "convert_outputs": convert_outputs or convert_torch_outputs,
        "dropout_rate": None,
        "output_dropout": output_dropout,
    }
    if output_layer is not None:
        layer = _check_resizable(module, output_layer, "output_layer")
        nO = output_width(layer)
        attrs.update(
            torch_output_layer=output_layer,
            output_bias_fill=output_bias_fill,
            resize_output=resize_output,
        )
    if input_layer is not None:
        _check_resizable(module, input_layer, "input_layer")
        attrs.update(torch_input_layer=input_layer, resize_input=resize_input)
    return CheckedModel(
        name,
        forward,
        attrs=attrs,
        shims=[TorchShim(module, mixed_precision=mixed_precision, grad_scaler=grad_scaler, device=device)],
        dims={"nI": nI, "nO": nO},
    )


def build_torch_wrapper(
    module: torch.nn.Module,
    *,
    output_layer: Optional[str] = None,
    input_layer: Optional[str] = None,
    output_bias_fill: float = 0.0,
    output_dropout: bool = False,
    mixed_precision: bool = False,
) -> Model[Any, Any]:
    """"spacy-pytorch-shim.TorchWrapper.v1": `TorchWrapper` with the
    arguments a config can give (the `module` block is built by another
    registered function)."""
    return TorchWrapper(
        module,
        output_layer=output_layer,
        input_layer=input_layer,
        output_bias_fill=output_bias_fill,
        output_dropout=output_dropout,
        mixed_precision=mixed_precision,
    )


def forward(model: Model, X: Any, is_train: bool) -> Tuple[Any, Callable]:
    shim = model.shims[0]
    output_dropout = model.attrs["output_dropout"]
    rate = model.attrs["dropout_rate"]
    shim.set_mode(is_train, None if output_dropout else rate)
    Xtorch, get_dX = model.attrs["convert_inputs"](model, X, is_train)
    Ytorch, torch_backprop = shim(Xtorch, is_train)
    Y, get_dYtorch = model.attrs["convert_outputs"](model, (X, Ytorch), is_train)
    mask = None
    if is_train and output_dropout and rate:
        Y, mask = _drop_outputs(model, Y, rate)

    def backprop(dY: Any) -> Any:
        if mask is not None:
            dY = _apply_mask(dY, mask)
        return get_dX(torch_backprop(get_dYtorch(dY)))

    return Y, backprop


def _drop_outputs(model: Model, Y: Any, rate: float) -> Tuple[Any, Any]:
    """One dropout mask per output array, shared with the backward pass."""
    if isinstance(Y, Ragged):
        mask = model.ops.get_dropout_mask(Y.dataXd.shape, rate)
    elif isinstance(Y, Padded):
        mask = model.ops.get_dropout_mask(Y.data.shape, rate)
    elif isinstance(Y, (list, tuple)):
        mask = [model.ops.get_dropout_mask(y.shape, rate) for y in Y]
    else:
        mask = model.ops.get_dropout_mask(Y.shape, rate)
    return _apply_mask(Y, mask), mask


def _apply_mask(Y: Any, mask: Any) -> Any:
    if isinstance(Y, Ragged):
        return Ragged(Y.dataXd * mask, Y.lengths)
    if isinstance(Y, Padded):
        return Padded(Y.data * mask, Y.size_at_t, Y.lengths, Y.indices)
    if isinstance(Y, (list, tuple)):
        return type(Y)(y * m for y, m in zip(Y, mask))
    return Y * mask


def _check_resizable(module: torch.nn.Module, layer_name: str, arg: str) -> torch.nn.Module:
    try:
        layer = module.get_submodule(layer_name)
    except AttributeError:
        raise ValueError(
            f"{arg}='{layer_name}' names no submodule of {type(module).__name__}"
        ) from None
    if not isinstance(layer, RESIZABLE_TYPES):
        raise ValueError(
            f"{arg}='{layer_name}' is a {type(layer).__name__}; only torch.nn.Linear, "
            f"Embedding and EmbeddingBag layers can be resized"
        )
    return layer
