"""Growing and shrinking torch layers without changing what they already know.

Growing keeps every existing weight and makes the new rows/columns zero (new
output biases take `bias_fill`); shrinking drops the last rows/columns. The
layer is changed in place (hooks, subclasses and references to the layer stay
valid) and returned.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from thinc.api import Model, get_array_module
from thinc.util import torch2xp, xp2torch

from .torch_shim import TorchShim

EMBEDDING_TYPES = (torch.nn.Embedding, torch.nn.EmbeddingBag)
EmbeddingLayer = Union[torch.nn.Embedding, torch.nn.EmbeddingBag]
RESIZABLE_TYPES = (torch.nn.Linear,) + EMBEDDING_TYPES


def resize_linear(
    layer: torch.nn.Linear,
    *,
    out_features: Optional[int] = None,
    in_features: Optional[int] = None,
    bias_fill: float = 0.0,
) -> torch.nn.Linear:
    """Resize a Linear layer's outputs (rows) and/or inputs (columns)."""
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"resize_linear needs a torch.nn.Linear, got {type(layer).__name__}")
    out_features = layer.out_features if out_features is None else out_features
    in_features = layer.in_features if in_features is None else in_features
    _check_size("out_features", out_features)
    _check_size("in_features", in_features)
    layer.weight = _resized_parameter(layer.weight, (out_features, in_features), 0.0)
    if layer.bias is not None:
        layer.bias = _resized_parameter(layer.bias, (out_features,), bias_fill)
    layer.out_features, layer.in_features = out_features, in_features
    return layer


def resize_embedding(
    layer: EmbeddingLayer,
    *,
    num_embeddings: Optional[int] = None,
    embedding_dim: Optional[int] = None,
) -> EmbeddingLayer:
    """Resize an Embedding or EmbeddingBag table: its rows (new rows are zero
    vectors) and/or its columns (new columns are zero)."""
    if not isinstance(layer, EMBEDDING_TYPES):
        raise TypeError(
            f"resize_embedding needs a torch.nn.Embedding or EmbeddingBag, got {type(layer).__name__}"
        )
    num_embeddings = layer.num_embeddings if num_embeddings is None else num_embeddings
    embedding_dim = layer.embedding_dim if embedding_dim is None else embedding_dim
    _check_size("num_embeddings", num_embeddings)
    _check_size("embedding_dim", embedding_dim)
    if layer.padding_idx is not None and layer.padding_idx >= num_embeddings:
        raise ValueError(
            f"Cannot shrink the embedding to {num_embeddings} rows: its padding_idx "
            f"is {layer.padding_idx}"
        )
    layer.weight = _resized_parameter(layer.weight, (num_embeddings, embedding_dim), 0.0)
    layer.num_embeddings, layer.embedding_dim = num_embeddings, embedding_dim
    return layer


def resize_output(model: Model, new_nO: int) -> Model:
    """spaCy's `model.attrs["resize_output"]` for wrapped modules built with
    `output_layer=`: resizes the outputs of every such layer in `model` (a
    Linear's rows, an embedding table's columns) and their optimizer state."""
    nodes = _output_nodes(model)
    if not nodes:
        raise ValueError(f"Model '{model.name}' holds no TorchWrapper with attrs['torch_output_layer']")
    old_widths = set()
    for node in nodes:
        layer_name = node.attrs["torch_output_layer"]
        layer = node.shims[0].module.get_submodule(layer_name)
        old_widths.add(output_width(layer))
        resize_layer(node, layer_name, **_output_sizes(node, layer, new_nO))
    # Thinc keeps the output width in dims["nO"], on the wrappers and on the
    # combinators (chain, add) that output what they output.
    resized = set(map(id, nodes))
    for node in model.walk():
        if node.has_dim("nO") is True and (id(node) in resized or (
            node.get_dim("nO") in old_widths and any(id(n) in resized for n in node.walk())
        )):
            node.set_dim("nO", new_nO, force=True)
    return model


def resized_output_shapes(model: Model, new_nO: int) -> Dict[int, Dict[str, Tuple[int, ...]]]:
    """The parameter shapes that `resize_output(model, new_nO)` gives the
    output layers, by shim id and parameter name, without resizing anything
    (loading checks saved weights against them before it resizes)."""
    shapes: Dict[int, Dict[str, Tuple[int, ...]]] = {}
    for node in _output_nodes(model):
        layer_name = node.attrs["torch_output_layer"]
        layer = node.shims[0].module.get_submodule(layer_name)
        sizes = _resized_shapes(layer, **_output_sizes(node, layer, new_nO))
        shapes[node.shims[0].id] = {f"{layer_name}.{name}": shape for name, shape in sizes.items()}
    return shapes


def _output_nodes(model: Model) -> List[Model]:
    return [node for node in model.walk() if _is_wrapper(node) and "torch_output_layer" in node.attrs]


def _output_sizes(node: Model, layer: torch.nn.Module, new_nO: int) -> Dict[str, Any]:
    """The resize that gives `layer` `new_nO` outputs: a Linear's rows (new
    biases at the wrapper's `output_bias_fill`), an embedding's columns."""
    if isinstance(layer, torch.nn.Linear):
        return {"out_features": new_nO, "bias_fill": node.attrs["output_bias_fill"]}
    return {"embedding_dim": new_nO}


def _resized_shapes(layer: torch.nn.Module, **sizes: Any) -> Dict[str, Tuple[int, ...]]:
    """The shapes of `layer`'s parameters after `resize_linear` or
    `resize_embedding` with `sizes`."""
    size = lambda name: getattr(layer, name) if sizes.get(name) is None else sizes[name]
    if isinstance(layer, torch.nn.Linear):
        shapes = {"weight": (size("out_features"), size("in_features"))}
        if layer.bias is not None:
            shapes["bias"] = (size("out_features"),)
        return shapes
    return {"weight": (size("num_embeddings"), size("embedding_dim"))}


def output_width(layer: torch.nn.Module) -> int:
    """A resizable layer's output width: a Linear's rows, an embedding's columns."""
    return layer.out_features if isinstance(layer, torch.nn.Linear) else layer.embedding_dim


def resize_input(model: Model, new_nI: int) -> Model:
    """`model.attrs["resize_input"]` for wrapped modules built with
    `input_layer=`: a Linear layer's in_features or an Embedding's rows."""
    node = _find_node(model, "torch_input_layer")
    layer_name = node.attrs["torch_input_layer"]
    layer = node.shims[0].module.get_submodule(layer_name)
    if isinstance(layer, EMBEDDING_TYPES):
        resize_layer(node, layer_name, num_embeddings=new_nI)
    else:
        resize_layer(node, layer_name, in_features=new_nI)
    return model


def resize_layer(model: Model, layer_name: str, **sizes) -> Model:
    """Resize the Linear or Embedding submodule `layer_name` of a wrapped
    module, and the state any optimizer that updated it keeps for it."""
    shim = _find_node(model, None).shims[0]
    layer = shim.module.get_submodule(layer_name)
    old_shapes: Dict[str, Tuple[int, ...]] = {
        name: tuple(p.shape) for name, p in layer.named_parameters()
    }
    if isinstance(layer, torch.nn.Linear):
        resize_linear(layer, **sizes)
    elif isinstance(layer, EMBEDDING_TYPES):
        resize_embedding(layer, **sizes)
    else:
        raise TypeError(
            f"Cannot resize '{layer_name}': {type(layer).__name__} is not a Linear, Embedding or EmbeddingBag"
        )
    for name, old_shape in old_shapes.items():
        resize_optimizer_state(shim, f"{layer_name}.{name}", old_shape)
    return model


def resize_optimizer_state(shim: TorchShim, name: str, old_shape: Tuple[int, ...]) -> None:
    """Give parameter `name`'s state in every optimizer that updated `shim`
    (Adam moments, averages) the parameter's new shape: kept where old and new
    overlap; new moments are zero and new averages start at the new
    parameter's values."""
    shim.clear_caches()
    key = (shim.id, name)
    param = shim.module.get_parameter(name).detach()
    for optimizer in shim.optimizers:
        stores = ((optimizer.mom1, False), (optimizer.mom2, False), (optimizer.averages, True))
        for store, like_param in stores:
            if store is None or key not in store:
                continue
            old = store[key]
            xp = get_array_module(old)
            resized = param.clone() if like_param else torch.zeros_like(param)
            overlap = tuple(slice(0, min(a, b)) for a, b in zip(old_shape, param.shape))
            resized[overlap] = xp2torch(old, device=param.device).reshape(old_shape)[overlap]
            new = xp.ascontiguousarray(torch2xp(resized))
            store[key] = new.ravel() if old.ndim == 1 and param.ndim != 1 else new


def _resized_parameter(
    param: torch.nn.Parameter, shape: Tuple[int, ...], fill: float
) -> torch.nn.Parameter:
    data = torch.full(shape, fill, dtype=param.dtype, device=param.device)
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(param.shape, shape))
    with torch.no_grad():
        data[overlap] = param[overlap]
    return torch.nn.Parameter(data, requires_grad=param.requires_grad)


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _is_wrapper(model: Model) -> bool:
    return len(model.shims) == 1 and isinstance(model.shims[0], TorchShim)


def _find_node(model: Model, attr: Optional[str]) -> Model:
    for node in model.walk():
        if _is_wrapper(node) and (attr is None or attr in node.attrs):
            return node
    what = f"with attrs['{attr}']" if attr else ""
    raise ValueError(f"Model '{model.name}' holds no TorchWrapper {what}".rstrip())
