"""Torch context encoders for the token-to-vector layer.

Each has a `width` attribute and maps padded vectors `(batch, seq_len, width)` and a boolean mask
`(batch, seq_len)` (True for real tokens) to `(batch, seq_len, width)`.
"""
import torch
from torch import nn


class CNNEncoder(nn.Module):
    """Residual blocks of a 1-d convolution over `2 * window + 1` tokens,
    GELU and LayerNorm; padding is zeroed before every convolution."""

    def __init__(self, width: int, depth: int, window: int, dropout: float):
        super().__init__()
        self.width = width
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, 2 * window + 1, padding=window) for _ in range(depth)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.dropout = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(X.dtype)
        for conv, norm in zip(self.convs, self.norms):
            H = conv((X * keep).transpose(1, 2)).transpose(1, 2)
            X = norm(X + self.dropout(nn.functional.gelu(H)))
        return X


class BiLSTMEncoder(nn.Module):
    """A bidirectional LSTM (width // 2 per direction) over packed sequences."""

    def __init__(self, width: int, depth: int, dropout: float):
        super().__init__()
        if width % 2:
            raise ValueError(f"BiLSTMEncoder needs an even width, got {width}")
        self.width = width
        self.lstm = nn.LSTM(
            width, width // 2, num_layers=depth, bidirectional=True,
            batch_first=True, dropout=dropout if depth > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            X, lengths, batch_first=True, enforce_sorted=False
        )
        output, _ = self.lstm(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(
            output, batch_first=True, total_length=X.shape[1]
        )
        return self.dropout(padded)


def build_cnn_encoder(*, width: int, depth: int = 4, window: int = 1, dropout: float = 0.1) -> nn.Module:
    """"spacy-pytorch-shim.CNNEncoder.v1"."""
    return CNNEncoder(width, depth, window, dropout)


def build_bilstm_encoder(*, width: int, depth: int = 1, dropout: float = 0.1) -> nn.Module:
    """"spacy-pytorch-shim.BiLSTMEncoder.v1"."""
    return BiLSTMEncoder(width, depth, dropout)
