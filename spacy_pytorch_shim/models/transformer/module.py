"""The torch side of the Hugging Face encoder: padded windows in, one
pooled vector per spaCy token out."""
import contextlib
import os
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # older torch: its default choice everywhere
    sdpa_kernel = None

# Training on the CPU, torch's fused attention kernel is slower than the
# unfused one up to this many padded pieces and faster beyond (MiniLM,
# bfloat16, forward and backward: 1.15-1.22x slower at 32-128 pieces, 1.2x
# faster at 256, 2.3x at 512); prediction is faster fused at every length.
UNFUSED_TRAINING_MAX_PIECES = 128


class PooledEncoder(nn.Module):
    """Runs `transformer` over groups of padded windows and pools its piece
    vectors into token vectors: token `targets[i]` adds `weights[i]` times
    piece row `rows[i]` (rows counted over all groups' flattened outputs).
    `transformer` is None until the encoder is loaded (`HFShim.set_transformer`)."""

    def __init__(self, transformer: Optional[nn.Module] = None, precision: str = "float32"):
        super().__init__()
        self.transformer = transformer
        self.precision = precision

    def forward(
        self,
        groups: List[Tuple[torch.Tensor, torch.Tensor]],
        rows: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        n_tokens: int,
    ) -> torch.Tensor:
        width = self.transformer.config.hidden_size
        device = rows.device
        dtype = autocast_dtype(self.precision, device)
        autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)
        # Activation checkpointing recomputes layers outside this function,
        # where the kernel choice would differ from the forward pass's.
        training = self.training and torch.is_grad_enabled() and not checkpointing(self.transformer)
        outputs = []
        with autocast:
            for ids, mask in groups:
                with attention_kernels(ids.shape[1], training, device):
                    outputs.append(self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state.reshape(-1, width))
        tokens = torch.zeros(n_tokens, width, device=device)
        if not outputs:
            return tokens
        pieces = torch.cat(outputs).float()
        return tokens.index_add(0, targets, pieces[rows] * weights.unsqueeze(1))


def checkpointing(transformer: nn.Module) -> bool:
    """Whether activation checkpointing is on (its transformers 5 name; the
    old one goes in 6)."""
    name = "is_activation_checkpointing" if hasattr(type(transformer), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(transformer, name, False))


def attention_kernels(length: int, training: bool, device: torch.device) -> Any:
    """The attention kernels for a pass over windows of `length` padded
    pieces: the unfused one when training on the CPU on short windows, else
    torch's choice."""
    if sdpa_kernel is not None and training and device.type == "cpu" and length <= UNFUSED_TRAINING_MAX_PIECES:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


PRECISIONS = ("float32", "float16", "bfloat16", "auto")


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The dtype the encoder computes in (under autocast), None for float32.
    float16 applies on a GPU only (the CPU's float16 kernels are slow
    emulations); bfloat16 on a GPU or the CPU; "auto" is bfloat16 where the
    device computes it natively (a GPU from Ampere on; a CPU with AVX512-BF16
    or AMX), float32 elsewhere."""
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else None
    if precision == "float16":
        return torch.float16 if device.type == "cuda" else None
    if precision == "bfloat16" and device.type in ("cuda", "cpu"):
        return torch.bfloat16
    return None


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic in hardware (torch's CPU
    checks are private and newer than torch 2.1: missing means no)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return any(getattr(torch.cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


# oneDNN, which runs the CPU's bfloat16 matrix products, keeps a compiled
# kernel per input shape (up to 1,024), and padded batches of windows bring
# ever new shapes: 60 training steps of MiniLM peaked 340 MB higher than
# with 16 kept, which hold a step's shapes (1% slower there).
ONEDNN_KERNELS_KEPT = "16"


def bound_onednn_kernel_cache() -> None:
    """Keep ONEDNN_KERNELS_KEPT kernels unless the environment says otherwise.
    oneDNN reads the variable when it builds its first kernel in the
    process: later calls change nothing."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_KERNELS_KEPT)
