"""The torch side of the Hugging Face encoder: padded windows in, one
pooled vector per spaCy token out."""
from typing import List, Optional, Tuple

import torch
from torch import nn


class PooledEncoder(nn.Module):
    """Runs `transformer` over groups of padded windows and pools its piece
    vectors into token vectors: token `targets[i]` adds `weights[i]` times
    piece row `rows[i]` (rows counted over all groups' flattened outputs).
    `transformer` is None until the encoder is loaded (`HFShim.set_transformer`)."""

    def __init__(self, transformer: Optional[nn.Module] = None, autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.transformer = transformer
        self.autocast_dtype = autocast_dtype

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
        autocast = torch.autocast(
            device_type=device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None and device.type == "cuda"
        )
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
