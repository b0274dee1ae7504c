"""All-or-nothing loading of Thinc's msgpack container of a model, whose
torch modules are stored in the safetensors format of `weights.py`.

Loading reads and checks everything first (the container's structure, every
node's dims, refs, data attrs and params, every torch module's tensors: names,
shapes and dtypes from the safetensors header before any data is read, then
the values), and only then changes the model. Whatever is wrong, the error is
one `ModelLoadError` saying where the data came from and what is wrong, and
the garbage collector is left as it was (srsly's msgpack reader disables it
and does not re-enable it when it raises).

`TorchWrapper` returns a `CheckedModel`, whose own `from_bytes`/`from_disk`
load this way; a combinator built around it (`chain`, `add`, ...) is a plain
Thinc Model: load that with `load_model_bytes`/`load_model_disk`.
"""
import contextlib
import gc
import numbers
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy
import srsly
from spacy.errors import Errors
from thinc.api import Model
from thinc.model import deserialize_attr, serialize_attr

from .torch_shim import TorchShim
from .weights import ModelLoadError, _anonymous_source, _error, _is_size, apply_module_state, read_module_state

CONTAINER_KEYS = ("nodes", "attrs", "params", "shims")
# Expected tensor shapes that differ from the module's current ones (the
# outputs of a model about to be resized), by shim id and then tensor name.
ShapeOverrides = Mapping[int, Mapping[str, Tuple[int, ...]]]


# ------------------------------------------------------- Thinc's container
def read_msgpack(data: Any, source: str) -> Any:
    """srsly's msgpack reader (with its numpy hook), one error type for any
    bad input, and the garbage collector's state restored whatever happens.
    msgpack bounds every length claim by the data's length (nothing large is
    allocated for a short input) and nesting by its stack depth."""
    if not isinstance(data, (bytes, bytearray)):
        raise _error(source, f"expected bytes, got {type(data).__name__}")
    with keep_gc_state():
        try:
            return srsly.msgpack_loads(bytes(data))
        except Exception as err:  # msgpack raises many types (ValueError, StackError, ExtraData, ...)
            what = str(err) or type(err).__name__
            raise _error(source, f"the data is truncated or corrupt, or not a msgpack container ({what})") from None


@contextlib.contextmanager
def keep_gc_state() -> Iterator[None]:
    """Restore `gc.isenabled()` on exit: srsly's msgpack reader disables the
    garbage collector, and re-enables it only when it succeeds."""
    enabled = gc.isenabled()
    try:
        yield
    finally:
        (gc.enable if enabled else gc.disable)()


class ModelState:
    """A model file read and checked against a model, applied by `apply()`
    (which has nothing left to check, so it does not fail half-way)."""

    def __init__(self, model: Model, steps: List[Callable[[], None]]):
        self.model = model
        self._steps = steps

    def apply(self) -> Model:
        for step in self._steps:
            step()
        return self.model


def load_model_bytes(model: Model, data: bytes, **kwargs: Any) -> Model:
    """`model.from_bytes(data)`, all or nothing (see `read_model_bytes`)."""
    return read_model_bytes(model, data, **kwargs).apply()


def load_model_disk(model: Model, path: Union[str, Path], *, allow_nonfinite: bool = False) -> Model:
    """`model.from_disk(path)`, all or nothing (see `read_model_bytes`); the
    errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise _error(str(path), err.strerror or type(err).__name__) from None
    return load_model_bytes(model, data, source=str(path), allow_nonfinite=allow_nonfinite)


class CheckedModel(Model):
    """A Thinc Model whose `from_bytes`/`from_disk` are `load_model_bytes`/
    `load_model_disk`: code that loads a model with Thinc's methods gets the
    checked, all-or-nothing loading too."""

    __slots__ = ()

    def from_bytes(self, bytes_data: bytes) -> "CheckedModel":
        return load_model_bytes(self, bytes_data)

    def from_disk(self, path: Union[str, Path]) -> "CheckedModel":
        return load_model_disk(self, path)

    def _copy(self, seen: Optional[Dict[int, Any]] = None) -> "CheckedModel":
        # Thinc's copy builds a plain Model: the copy keeps the class.
        copied = super()._copy(seen)
        copied.__class__ = type(self)
        return copied


def read_model_bytes(
    model: Model,
    data: Any,
    *,
    source: Optional[str] = None,
    shapes: Optional[ShapeOverrides] = None,
    allow_nonfinite: bool = False,
) -> ModelState:
    """Read bytes written by `model.to_bytes()` and check them against
    `model` without changing it: the same nodes (names, refs), dims that agree,
    only attrs that are data and of the same kind, every param present and
    finite, one shim entry per shim, and each TorchShim's tensors as
    `read_module_state` checks them (`shapes`: overrides by shim id)."""
    source = source or _anonymous_source(data)
    with keep_gc_state():
        return _read_model_msg(model, read_msgpack(data, source), source, shapes or {}, allow_nonfinite)


def _read_model_msg(model: Model, msg: Any, source: str, shapes: ShapeOverrides, allow_nonfinite: bool) -> ModelState:
    nodes = list(model.walk())
    if not isinstance(msg, dict) or sorted(msg) != sorted(CONTAINER_KEYS):
        keys = sorted(map(str, msg)) if isinstance(msg, dict) else type(msg).__name__
        raise _error(source, f"not a Thinc model container (found {keys}, expected {list(CONTAINER_KEYS)})")
    for key in CONTAINER_KEYS:
        if not isinstance(msg[key], list) or len(msg[key]) != len(nodes):
            found = len(msg[key]) if isinstance(msg[key], list) else type(msg[key]).__name__
            raise _error(source, f"'{key}' has {found} entries for a model of {len(nodes)} nodes. {Errors.E149}")
    index = {node.id: i for i, node in enumerate(nodes)}
    steps: List[Callable[[], None]] = []
    for i, node in enumerate(nodes):
        where = f"node {i} ('{node.name}')"
        _check_node_info(node, msg["nodes"][i], index, where, source)
        steps += _dims_steps(node, msg["nodes"][i]["dims"], where, source)
        steps += _attrs_steps(node, msg["attrs"][i], where, source)
        steps += _params_steps(node, msg["params"][i], where, source, allow_nonfinite)
        steps += _shims_steps(node, msg["shims"][i], where, source, shapes, allow_nonfinite)
    return ModelState(model, steps)


def _check_node_info(node: Model, info: Any, index: Dict[int, int], where: str, source: str) -> None:
    if not isinstance(info, dict) or not {"name", "dims", "refs"} <= set(info):
        raise _error(source, f"{where} has no valid entry in 'nodes'")
    if info["name"] != node.name:
        raise _error(source, f"{where} is named {info['name']!r} in the data. {Errors.E149}")
    refs = {
        name: index.get(node.get_ref(name).id) if node.has_ref(name) else None
        for name in node.ref_names
    }
    if info["refs"] != refs:
        raise _error(source, f"{where} has refs {info['refs']!r} in the data but {refs!r} in the model")
    if not isinstance(info["dims"], dict):
        raise _error(source, f"{where} has no valid dims")


def _dims_steps(node: Model, dims: Dict, where: str, source: str) -> List[Callable[[], None]]:
    steps: List[Callable[[], None]] = []
    for dim, value in dims.items():
        if dim not in node.dim_names:
            raise _error(source, f"{where} has no dim {dim!r}")
        if value is None:
            continue
        if not _is_size(value):
            raise _error(source, f"{where}: dim {dim!r} is {value!r}, not a size")
        current = node.get_dim(dim) if node.has_dim(dim) else None
        if current == value:
            continue
        # As Thinc allows: a dim changes only on a node without params (here a
        # size inferred from the torch modules, e.g. a chain's nO after a resize).
        if current is not None and any(node.has_param(name) for name in node.param_names):
            raise _error(source, f"{where}: dim {dim!r} is {value} in the data but {current} in the model")
        steps.append(lambda node=node, dim=dim, value=value: node.set_dim(dim, value, force=True))
    return steps


def _attrs_steps(node: Model, attrs: Any, where: str, source: str) -> List[Callable[[], None]]:
    if not isinstance(attrs, dict):
        raise _error(source, f"{where} has no valid attrs")
    steps: List[Callable[[], None]] = []
    for name, value in attrs.items():
        if name not in node.attrs:
            raise _error(source, f"{where} has no attr {name!r} to load")
        current = node.attrs[name]
        try:
            expected = deserialize_attr(current, serialize_attr(current, current, name, node), name, node)
        except TypeError:
            raise _error(source, f"{where}: attr {name!r} is not data ({type(current).__name__}) and cannot be loaded") from None
        if not isinstance(value, bytes):
            raise _error(source, f"{where}: attr {name!r} is not serialized data")
        try:
            loaded = deserialize_attr(current, value, name, node)
        except Exception as err:
            raise _error(source, f"{where}: attr {name!r} cannot be read ({str(err) or type(err).__name__})") from None
        if _kind(loaded) != _kind(expected) and None not in (loaded, expected):
            raise _error(
                source,
                f"{where}: attr {name!r} is {_kind(loaded)} in the data but {_kind(expected)} in the model",
            )
        steps.append(lambda node=node, name=name, loaded=loaded: node.attrs.__setitem__(name, loaded))
    return steps


def _kind(value: Any) -> str:
    """What an attr value is, for "is it still the same kind of data"
    (a data attr that is None, unset, may take any)."""
    if isinstance(value, numpy.ndarray):
        return f"an array of {value.ndim} dims of {value.dtype}"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return "a number"
    return type(value).__name__


def _params_steps(node: Model, params: Any, where: str, source: str, allow_nonfinite: bool) -> List[Callable[[], None]]:
    if not isinstance(params, dict) or set(params) != set(node.param_names):
        found = sorted(map(str, params)) if isinstance(params, dict) else type(params).__name__
        raise _error(source, f"{where} has params {found} in the data but {sorted(node.param_names)} in the model")
    steps: List[Callable[[], None]] = []
    for name, value in params.items():
        if value is None:
            if node.has_param(name):
                raise _error(source, f"{where}: param {name!r} has no value in the data")
            continue
        if not isinstance(value, numpy.ndarray) or value.dtype.kind != "f":
            raise _error(source, f"{where}: param {name!r} is not a float array")
        if node.has_param(name) and node.get_param(name).shape != value.shape:
            raise _error(
                source,
                f"{where}: param {name!r} has shape {value.shape} in the data "
                f"but {node.get_param(name).shape} in the model",
            )
        if not allow_nonfinite and not numpy.isfinite(value).all():
            raise _error(source, f"{where}: param {name!r} holds NaN or infinite values")
        steps.append(lambda node=node, name=name, value=value: node.set_param(name, node.ops.asarray(value).copy()))
    return steps


def _shims_steps(
    node: Model, blobs: Any, where: str, source: str, shapes: ShapeOverrides, allow_nonfinite: bool
) -> List[Callable[[], None]]:
    if not isinstance(blobs, list) or len(blobs) != len(node.shims):
        found = len(blobs) if isinstance(blobs, list) else type(blobs).__name__
        raise _error(source, f"{where} has {found} shim entries in the data but {len(node.shims)} shims in the model")
    steps: List[Callable[[], None]] = []
    for shim, blob in zip(node.shims, blobs):
        if hasattr(shim, "read_bytes"):
            # A shim that checks its own format (a module rebuilt from saved
            # files): read_bytes checks everything and returns the step.
            steps.append(shim.read_bytes(blob, source=f"{source}, torch module of {where}", allow_nonfinite=allow_nonfinite))
            continue
        if not isinstance(shim, TorchShim):
            # Not ours: its format is its own, so it is loaded as Thinc would.
            steps.append(lambda shim=shim, blob=blob: shim.from_bytes(blob))
            continue
        state = read_module_state(
            shim.module,
            blob,
            shapes=shapes.get(shim.id),
            source=f"{source}, torch module of {where}",
            allow_nonfinite=allow_nonfinite,
        )
        steps.append(lambda shim=shim, state=state: apply_module_state(shim.module, state, shim.device))
    return steps
