"""The safetensors format of a torch module's state (no code, no pickle), and
all-or-nothing loading of Thinc's msgpack container that holds it.

Loading reads and checks everything first (the container's structure, every
node's dims, refs, data attrs and params, every torch module's tensors: names,
shapes and dtypes from the safetensors header before any data is read, then
the values), and only then changes the model. Whatever is wrong, the error is
one `ModelLoadError` saying where the data came from and what is wrong, and
the garbage collector is left as it was (srsly's msgpack reader disables it
and does not re-enable it when it raises).
"""
import contextlib
import gc
import json
import math
import numbers
import struct
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy
import srsly
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from spacy.errors import Errors
from thinc.api import Model
from thinc.model import deserialize_attr, serialize_attr

# One metadata key: safetensors does not keep the order of several.
FORMAT = "spacy-pytorch-shim/1"
# torch's state-dict key suffix for a module's `get_extra_state()`.
EXTRA_STATE = "_extra_state"
# safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100_000_000
CONTAINER_KEYS = ("nodes", "attrs", "params", "shims")
# Expected tensor shapes that differ from the module's current ones (the
# outputs of a model about to be resized), by shim id and then tensor name.
ShapeOverrides = Mapping[int, Mapping[str, Tuple[int, ...]]]

_DTYPES: Dict[str, Tuple[torch.dtype, int]] = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "I16": (torch.int16, 2),
    "I32": (torch.int32, 4),
    "I64": (torch.int64, 8),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
}
_DTYPE_NAMES = {dtype: name for name, (dtype, _) in _DTYPES.items()}


class ModelLoadError(ValueError):
    """Model data that cannot be loaded, whatever the cause: unreadable
    (truncated, random, another format, pickle), or not fitting the model."""


def _error(source: str, what: str) -> ModelLoadError:
    return ModelLoadError(f"Could not read torch weights from {source}: {what}")


def _anonymous_source(data: Any) -> str:
    """Where data came from, when the caller did not say (no file name)."""
    size = len(data) if isinstance(data, (bytes, bytearray)) else "?"
    return f"{size} bytes of data"


# ------------------------------------------------------------ module state
def module_to_bytes(module: torch.nn.Module) -> bytes:
    """The module's state dict (parameters, persistent buffers, and extra
    state as a tensor or as UTF-8 JSON in a uint8 tensor) as safetensors bytes."""
    tensors: Dict[str, torch.Tensor] = {}
    seen: Dict[Tuple[int, int], str] = {}
    for name, value in module.state_dict().items():
        tensor = value if isinstance(value, torch.Tensor) else _encode_extra_state(name, value)
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        # safetensors refuses tensors that share memory (tied weights).
        tensors[name] = tensor.clone() if key in seen else tensor
        seen[key] = name
    return safetensors_save(tensors, metadata={"format": FORMAT})


def _encode_extra_state(name: str, value: Any) -> torch.Tensor:
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(
            f"Cannot save '{name}' ({type(value).__name__}): the extra state a module "
            f"returns from get_extra_state() must be a tensor or JSON data (dicts, lists, "
            f"strings, finite numbers) to be stored in safetensors"
        ) from None
    return torch.tensor(list(text.encode("utf8")), dtype=torch.uint8)


def load_module_bytes(
    module: torch.nn.Module,
    data: bytes,
    device: torch.device,
    *,
    source: Optional[str] = None,
    allow_nonfinite: bool = False,
) -> None:
    """Load weights saved by `module_to_bytes`. Everything is checked before
    anything is written, so on error the module is left as it was."""
    state = read_module_state(module, data, source=source, allow_nonfinite=allow_nonfinite)
    apply_module_state(module, state, device)


def read_module_state(
    module: torch.nn.Module,
    data: Any,
    *,
    shapes: Optional[Mapping[str, Tuple[int, ...]]] = None,
    source: Optional[str] = None,
    allow_nonfinite: bool = False,
) -> Dict[str, Any]:
    """Parse and check safetensors bytes for `module` (its state dict, with
    `shapes` overriding expected shapes) without changing it: the header is
    checked against the data length and the module before any tensor is read."""
    source = source or _anonymous_source(data)
    if not isinstance(data, (bytes, bytearray)):
        raise _error(source, f"expected bytes of safetensors data, got {type(data).__name__}")
    data = bytes(data)
    expected = module.state_dict()
    header = read_safetensors_header(data, source)
    check_header(expected, header, shapes or {}, source)
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as err:
        raise _error(source, f"the data is truncated or corrupt ({err})") from None
    state: Dict[str, Any] = {}
    for name, current in expected.items():
        tensor = tensors[name]
        if not isinstance(current, torch.Tensor):
            state[name] = _decode_extra_state(name, tensor, source)
            continue
        if not allow_nonfinite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _error(
                source,
                f"parameter '{name}' holds NaN or infinite values (pass allow_nonfinite=True "
                f"to load them anyway)",
            )
        state[name] = tensor
    return state


def apply_module_state(module: torch.nn.Module, state: Dict[str, Any], device: torch.device) -> None:
    """Copy a state read by `read_module_state` into the module (in place)."""
    module.load_state_dict(
        {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state.items()},
        strict=True,
    )


def _decode_extra_state(name: str, tensor: torch.Tensor, source: str) -> Any:
    try:
        return json.loads(bytes(tensor.numpy()).decode("utf8"))
    except (ValueError, RecursionError):
        raise _error(source, f"the extra state '{name}' is not valid UTF-8 JSON") from None


def read_safetensors_header(data: bytes, source: str) -> Dict[str, Dict[str, Any]]:
    """The tensors' entries of a safetensors header (dtype, shape,
    data_offsets), each checked against the length of the data."""
    if _looks_pickled(data):
        raise ModelLoadError(
            f"Refusing to load torch weights stored with pickle (torch.save) from {source}: "
            f"spacy-pytorch-shim only reads the safetensors format, which cannot "
            f"run code. Re-save the weights with spacy-pytorch-shim's to_bytes/to_disk."
        )
    if len(data) < 8:
        raise _error(source, f"the data is truncated or corrupt: {len(data)} bytes, too short for a safetensors header")
    (n_header,) = struct.unpack("<Q", data[:8])
    n_buffer = len(data) - 8 - n_header
    if n_header > MAX_HEADER_BYTES or n_buffer < 0:
        raise _error(
            source,
            f"the data is truncated or corrupt, or not in the safetensors format: its header "
            f"claims {n_header} bytes but only {len(data) - 8} follow",
        )
    try:
        header = json.loads(data[8 : 8 + n_header].decode("utf8"))
    except (ValueError, RecursionError):
        raise _error(source, "the data is truncated or corrupt: its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _error(source, "the data is corrupt: its safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _error(source, "the data is corrupt: its safetensors metadata is not a map of strings")
    for name, info in header.items():
        problem = _header_entry_problem(info, n_buffer)
        if problem:
            raise _error(source, f"the data is truncated or corrupt: tensor '{name}' {problem}")
    return header


def _header_entry_problem(info: Any, n_buffer: int) -> Optional[str]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        return "has no valid header entry"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPES:
        return f"has an unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
        return f"has an invalid shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_size(n) for n in offsets)):
        return f"has invalid data offsets {offsets!r}"
    begin, end = offsets
    if not begin <= end <= n_buffer:
        return f"claims bytes {begin}..{end} of a {n_buffer}-byte buffer"
    if end - begin != math.prod(shape) * _DTYPES[dtype][1]:
        return f"claims {end - begin} bytes for shape {shape} of {dtype}"
    return None


def _is_size(value: Any) -> bool:
    return type(value) is int and value >= 0


def check_header(
    expected: Mapping[str, Any],
    header: Mapping[str, Mapping[str, Any]],
    shapes: Mapping[str, Tuple[int, ...]],
    source: str,
) -> None:
    """Raise one error naming every missing, unexpected, mis-shaped or
    mistyped entry of the header compared with the module's state dict."""
    problems: List[str] = []
    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing:
        problems.append(f"missing parameters: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected parameters: {', '.join(extra)}")
    for name, current in expected.items():
        if name not in header:
            continue
        info = header[name]
        if not isinstance(current, torch.Tensor):
            if info["dtype"] != "U8" or len(info["shape"]) != 1:
                problems.append(f"extra state '{name}' is not stored as JSON bytes")
            continue
        want_shape = tuple(shapes.get(name, current.shape))
        if tuple(info["shape"]) != want_shape:
            problems.append(
                f"parameter '{name}' has shape {tuple(info['shape'])} in the data "
                f"but {want_shape} in the model"
            )
        elif info["dtype"] != _DTYPE_NAMES.get(current.dtype):
            problems.append(
                f"parameter '{name}' has dtype {_DTYPES[info['dtype']][0]} in the data "
                f"but {current.dtype} in the model"
            )
    if problems:
        raise _error(source, "the weights do not fit this torch module (nothing was loaded into it): " + "; ".join(problems))


def _looks_pickled(data: bytes) -> bool:
    """torch.save's zip container, or a bare pickle (protocol 2-5 ... STOP)."""
    is_zip = data[:4] == b"PK\x03\x04"
    return is_zip or (data[:1] == b"\x80" and data[1:2] in b"\x02\x03\x04\x05" and data.endswith(b"."))


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
    from .torch_shim import TorchShim  # (torch_shim imports this module)

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
