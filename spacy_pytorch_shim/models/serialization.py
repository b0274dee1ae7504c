"""The safetensors format of a torch module's state: no code, no pickle."""
from typing import Dict, List, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

# One metadata key: safetensors does not keep the order of several.
FORMAT = "spacy-pytorch-shim/1"


def module_to_bytes(module: torch.nn.Module) -> bytes:
    """The module's state dict (parameters and persistent buffers) as
    safetensors bytes."""
    tensors: Dict[str, torch.Tensor] = {}
    seen: Dict[Tuple[int, int], str] = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        # safetensors refuses tensors that share memory (tied weights).
        tensors[name] = tensor.clone() if key in seen else tensor
        seen[key] = name
    return safetensors_save(tensors, metadata={"format": FORMAT})


def load_module_bytes(module: torch.nn.Module, data: bytes, device: torch.device) -> None:
    """Load weights saved by `module_to_bytes`. Everything is checked before
    anything is written, so on error the module is left as it was."""
    loaded = load_state_bytes(data)
    check_state_dict(module.state_dict(), loaded)
    module.load_state_dict({k: v.to(device) for k, v in loaded.items()}, strict=True)


def load_state_bytes(data: bytes) -> Dict[str, torch.Tensor]:
    """Parse safetensors bytes, with a clear error for anything else."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"Expected bytes of torch weights, got {type(data).__name__}")
    try:
        return safetensors_load(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as err:
        if _looks_pickled(data):
            raise ValueError(
                "Refusing to load torch weights stored with pickle (torch.save): "
                "spacy-pytorch-shim only reads the safetensors format, which cannot "
                "run code. Re-save the weights with spacy-pytorch-shim's to_bytes/to_disk."
            ) from None
        raise ValueError(
            f"Could not read torch weights ({len(data)} bytes): the data is "
            f"truncated or corrupt, or not in the safetensors format ({err})"
        ) from None


def _looks_pickled(data: bytes) -> bool:
    """torch.save's zip container, or a bare pickle (protocol 2-5 ... STOP)."""
    is_zip = data[:4] == b"PK\x03\x04"
    return is_zip or (data[:1] == b"\x80" and data[1:2] in b"\x02\x03\x04\x05" and data.endswith(b"."))


def check_state_dict(
    expected: Dict[str, torch.Tensor], loaded: Dict[str, torch.Tensor]
) -> None:
    """Raise one error naming every missing, unexpected or mis-shaped entry."""
    problems: List[str] = []
    missing = [k for k in expected if k not in loaded]
    extra = [k for k in loaded if k not in expected]
    if missing:
        problems.append(f"missing parameters: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected parameters: {', '.join(extra)}")
    for name, tensor in expected.items():
        if name not in loaded:
            continue
        other = loaded[name]
        if tuple(other.shape) != tuple(tensor.shape):
            problems.append(
                f"parameter '{name}' has shape {tuple(other.shape)} in the data "
                f"but {tuple(tensor.shape)} in the model"
            )
        elif other.dtype != tensor.dtype:
            problems.append(
                f"parameter '{name}' has dtype {other.dtype} in the data "
                f"but {tensor.dtype} in the model"
            )
    if problems:
        raise ValueError(
            "Cannot load torch weights into this torch module (nothing was loaded into it): "
            + "; ".join(problems)
        )
