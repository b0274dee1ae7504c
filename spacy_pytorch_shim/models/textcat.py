"""Text classification: pooled token vectors plus a bag of hashed n-grams."""
from typing import List, Optional

import torch
from spacy.tokens import Doc
from thinc.api import Model, add, chain, list2ragged
from thinc.types import Floats2d
from torch import nn

from .checks import check_rate, check_size, tok2vec_width
from .features import hashed_ngrams
from .resize import resize_output
from .torch_wrapper import TorchWrapper


class PoolingHead(nn.Module):
    """Mean- and max-pool each doc's token vectors, then a hidden layer."""

    def __init__(self, nI: int, hidden_width: int, nO: int, dropout: float):
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Linear(2 * nI, hidden_width), nn.GELU(), nn.Dropout(dropout)
        )
        self.output = nn.Linear(hidden_width, nO)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.long()
        n_docs = len(lengths)
        if not len(X):  # no tokens: Thinc's flatten of no docs has no width either
            X = X.new_zeros(0, self.hidden[0].in_features // 2)
        doc_ids = torch.repeat_interleave(torch.arange(n_docs, device=X.device), lengths)
        index = doc_ids.unsqueeze(1).expand_as(X)
        sums = X.new_zeros(n_docs, X.shape[1]).index_add_(0, doc_ids, X)
        means = sums / lengths.clamp(min=1).unsqueeze(1).to(X.dtype)
        maxes = X.new_zeros(n_docs, X.shape[1]).scatter_reduce(
            0, index, X, reduce="amax", include_self=False
        )
        return self.output(self.hidden(torch.cat([means, maxes], dim=1)))


class BagOfNgrams(nn.Module):
    """A linear model over hashed n-gram counts: one row of logits per n-gram."""

    def __init__(self, rows: int, nO: int):
        super().__init__()
        self.output = nn.EmbeddingBag(rows, nO, mode="sum")
        nn.init.zeros_(self.output.weight)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        offsets = torch.cumsum(lengths.long(), 0) - lengths.long()
        return self.output(ids, offsets)


def build_textcat(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    dropout: float = 0.1,
    ngram_size: int = 2,
    ngram_rows: int = 2**16,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v1": one row of label logits per doc,
    the sum of a pooled token-vector head (left out when tok2vec is null) and
    a bag of hashed 1..ngram_size-grams (left out when ngram_size is 0). The
    component applies softmax (exclusive_classes) or sigmoid."""
    return _build_textcat(
        "spacy-pytorch-shim.TorchTextCat.v1", tok2vec, exclusive_classes, hidden_width, dropout, ngram_size, ngram_rows, nO
    )


def build_textcat_v2(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 2,
    ngram_rows: int = 2**16,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v2": v1 without `dropout`, which the
    caller's rate (`[training] dropout`) always replaced in training."""
    return _build_textcat(
        "spacy-pytorch-shim.TorchTextCat.v2", tok2vec, exclusive_classes, hidden_width, 0.0, ngram_size, ngram_rows, nO
    )


def _build_textcat(
    arch: str,
    tok2vec: Optional[Model],
    exclusive_classes: bool,
    hidden_width: int,
    dropout: float,
    ngram_size: int,
    ngram_rows: int,
    nO: Optional[int],
) -> Model[List[Doc], Floats2d]:
    check_size(arch, "hidden_width", hidden_width)
    check_rate(arch, "dropout", dropout)
    check_size(arch, "ngram_size", ngram_size, minimum=0)
    if ngram_size:
        check_size(arch, "ngram_rows", ngram_rows, minimum=2)  # row 0 is the bias
    if nO is not None:
        check_size(arch, "nO", nO)
    heads = []
    if tok2vec is not None:
        width = tok2vec_width(arch, tok2vec)
        heads.append(
            chain(
                tok2vec,
                list2ragged(),
                TorchWrapper(
                    PoolingHead(width, hidden_width, nO or 1, dropout),
                    output_layer="output",
                    name="torch_textcat_pooling",
                ),
            )
        )
    if ngram_size:
        heads.append(
            chain(
                hashed_ngrams("LOWER", ngram_size, ngram_rows),
                TorchWrapper(
                    BagOfNgrams(ngram_rows, nO or 1),
                    output_layer="output",
                    name="torch_textcat_ngrams",
                ),
            )
        )
    if not heads:
        raise ValueError("TorchTextCat needs a tok2vec, ngram_size > 0, or both")
    model = add(*heads) if len(heads) > 1 else heads[0]
    model.name = "torch_textcat"
    if tok2vec is not None:
        model.set_ref("tok2vec", tok2vec)
    model.attrs["resize_output"] = resize_output
    model.attrs["exclusive_classes"] = exclusive_classes
    return model
