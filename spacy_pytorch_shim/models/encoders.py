"""Torch context encoders for the token-to-vector layer.

Each has a `width` attribute and maps the concatenated token vectors of a
batch `(n_tokens, width)` plus the docs' `lengths` to `(n_tokens, width)`,
without padding the docs to a common length (no compute spent on padding).
"""
import torch
from torch import nn

from .checks import check_rate, check_size


class CNNEncoder(nn.Module):
    """Residual blocks of a 1-d convolution over `2 * window + 1` tokens,
    GELU and LayerNorm. The docs are laid end to end with `window` zero rows
    between them, so a convolution never mixes two docs."""

    def __init__(self, width: int, depth: int, window: int, dropout: float):
        super().__init__()
        self.width = width
        self.window = window
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, 2 * window + 1) for _ in range(depth)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.dropout = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not len(X) or not len(self.convs):
            return X
        rows = end_to_end_rows(lengths, self.window)
        for conv, norm in zip(self.convs, self.norms):
            H = convolve_laid_out(conv, X, rows, len(lengths), self.window)
            X = norm(X + self.dropout(nn.functional.gelu(H)))
        return X


def end_to_end_rows(lengths: torch.Tensor, gap: int) -> torch.Tensor:
    """The row of each item when the sequences of `lengths` are laid end to
    end with `gap` zero rows before, between and after them: item t of
    sequence i sits after i + 1 gaps."""
    lengths = lengths.long()
    sequence_ids = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    return torch.arange(len(sequence_ids), device=lengths.device) + gap * (sequence_ids + 1)


def convolve_laid_out(conv: nn.Conv1d, X: torch.Tensor, rows: torch.Tensor, n_sequences: int, gap: int) -> torch.Tensor:
    """`conv`, an unpadded convolution over 2 * gap + 1 rows, applied to the
    rows of X laid out at `rows` (`end_to_end_rows`): each item's output is
    the one its sequence would give zero-padded on its own. The laid-out
    length is rounded up by `bucketed_length`."""
    length = bucketed_length(len(X) + gap * (n_sequences + 1))
    laid_out = X.new_zeros(length, X.shape[1]).index_copy(0, rows, X)
    return conv(laid_out.T.unsqueeze(0)).squeeze(0).T[rows - gap]


def bucketed_length(length: int) -> int:
    """`length` rounded up to one of 16 steps per doubling (at least 64 rows):
    at most 1/16 more rows. oneDNN caches a convolution kernel for each
    input shape it sees (up to 1,024 of them), so a process annotating
    batches of ever new lengths grew by hundreds of MB; with lengths in
    buckets it sees a few dozen shapes and its memory stays flat."""
    step = max(64, 1 << max(0, length.bit_length() - 5))
    return -(-length // step) * step


class BiLSTMEncoder(nn.Module):
    """A bidirectional LSTM (width // 2 per direction) over packed sequences."""

    def __init__(self, width: int, depth: int, dropout: float):
        super().__init__()
        if width % 2:
            raise ValueError(f"BiLSTMEncoder needs an even width, got {width}")
        self.width = width
        self.lstm = nn.LSTM(
            width, width // 2, num_layers=depth, bidirectional=True,
            dropout=dropout if depth > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        docs = [doc for doc in torch.split(X, lengths.tolist()) if len(doc)]
        if not docs:
            return X
        packed = nn.utils.rnn.pack_sequence(docs, enforce_sorted=False)
        output, _ = self.lstm(packed)
        return self.dropout(torch.cat(nn.utils.rnn.unpack_sequence(output)))


def build_cnn_encoder(*, width: int, depth: int = 4, window: int = 1, dropout: float = 0.1) -> nn.Module:
    """"spacy-pytorch-shim.CNNEncoder.v1"."""
    return _build_cnn_encoder("spacy-pytorch-shim.CNNEncoder.v1", width, depth, window, dropout)


def build_cnn_encoder_v2(*, width: int, depth: int = 4, window: int = 1) -> nn.Module:
    """"spacy-pytorch-shim.CNNEncoder.v2": v1 without `dropout`, which the
    caller's rate (`[training] dropout`) always replaced in training."""
    return _build_cnn_encoder("spacy-pytorch-shim.CNNEncoder.v2", width, depth, window, 0.0)


def _build_cnn_encoder(arch: str, width: int, depth: int, window: int, dropout: float) -> nn.Module:
    check_size(arch, "width", width)
    check_size(arch, "depth", depth, minimum=0)
    check_size(arch, "window", window, minimum=0)
    check_rate(arch, "dropout", dropout)
    return CNNEncoder(width, depth, window, dropout)


def build_bilstm_encoder(*, width: int, depth: int = 1, dropout: float = 0.1) -> nn.Module:
    """"spacy-pytorch-shim.BiLSTMEncoder.v1"."""
    return _build_bilstm_encoder("spacy-pytorch-shim.BiLSTMEncoder.v1", width, depth, dropout)


def build_bilstm_encoder_v2(*, width: int, depth: int = 1) -> nn.Module:
    """"spacy-pytorch-shim.BiLSTMEncoder.v2": v1 without `dropout` (the
    caller's rate)."""
    return _build_bilstm_encoder("spacy-pytorch-shim.BiLSTMEncoder.v2", width, depth, 0.0)


def _build_bilstm_encoder(arch: str, width: int, depth: int, dropout: float) -> nn.Module:
    check_size(arch, "width", width)
    check_size(arch, "depth", depth)
    check_rate(arch, "dropout", dropout)
    return BiLSTMEncoder(width, depth, dropout)
