"""The torch side of the Hugging Face encoder: padded windows in, one
pooled vector per spaCy token out."""
import os
from typing import List, Optional, Tuple

import torch
from torch import nn


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
        with autocast:
            outputs = [
                self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state.reshape(-1, width)
                for ids, mask in groups
            ]
        tokens = torch.zeros(n_tokens, width, device=device)
        if not outputs:
            return tokens
        pieces = torch.cat(outputs).float()
        return tokens.index_add(0, targets, pieces[rows] * weights.unsqueeze(1))


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
