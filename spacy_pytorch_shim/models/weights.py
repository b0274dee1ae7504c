"""The safetensors format of a torch module's state: no code, no pickle.

Reading checks everything before the module is touched: the header against
the data's length and against the module's state dict (names, shapes and
dtypes), then the values. Whatever is wrong, the error is one
`ModelLoadError` saying where the data came from and what is wrong. This
module is a leaf: the shim uses it, and the loading of Thinc's container
(`serialization.py`) builds on it.
"""
import json
import math
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

# One metadata key: safetensors does not keep the order of several.
FORMAT = "spacy-pytorch-shim/1"
# torch's state-dict key suffix for a module's `get_extra_state()`.
EXTRA_STATE = "_extra_state"
# safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100_000_000

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
