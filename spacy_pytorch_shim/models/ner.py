"""NER tagger head: per-token scores over BILUO tags ("O" + B/I/L/U per label)."""
from typing import List, Optional

import torch
from spacy.tokens import Doc
from thinc.api import Model, chain, list2ragged, ragged2list
from thinc.types import Floats2d
from torch import nn

from .checks import check_rate, check_size, tok2vec_width
from .convert import convert_ragged_outputs
from .torch_wrapper import TorchWrapper


class TaggerHead(nn.Module):
    """Token vectors -> tag logits, through an optional hidden layer."""

    def __init__(self, nI: int, hidden_width: int, nO: int, dropout: float):
        super().__init__()
        if hidden_width:
            self.hidden: nn.Module = nn.Sequential(
                nn.Linear(nI, hidden_width), nn.GELU(), nn.Dropout(dropout)
            )
            nI = hidden_width
        else:
            self.hidden = nn.Dropout(dropout)
        self.output = nn.Linear(nI, nO)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not len(X):  # no tokens: Thinc's flatten of no docs has no width either
            return X.new_zeros(0, self.output.out_features)
        return self.output(self.hidden(X))


def build_ner_tagger(
    *,
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 64,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchNERTagger.v1": per-token BILUO tag scores
    (logits) over any token-to-vector layer; the `torch_ner` component decodes
    them into valid entity spans. `nO` is set from the labels at initialization."""
    return _build_ner_tagger("spacy-pytorch-shim.TorchNERTagger.v1", tok2vec, hidden_width, dropout, nO)


def build_ner_tagger_v2(
    *,
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 64,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchNERTagger.v2": v1 without `dropout`, which
    the caller's rate (`[training] dropout`) always replaced in training."""
    return _build_ner_tagger("spacy-pytorch-shim.TorchNERTagger.v2", tok2vec, hidden_width, 0.0, nO)


def _build_ner_tagger(
    arch: str, tok2vec: Model, hidden_width: int, dropout: float, nO: Optional[int]
) -> Model[List[Doc], List[Floats2d]]:
    check_size(arch, "hidden_width", hidden_width, minimum=0)  # 0: no hidden layer
    check_rate(arch, "dropout", dropout)
    if nO is not None:
        check_size(arch, "nO", nO)
    width = tok2vec_width(arch, tok2vec)
    head = TorchWrapper(
        TaggerHead(width, hidden_width, nO or 1, dropout),
        convert_outputs=convert_ragged_outputs,
        output_layer="output",
        name="torch_ner_head",
    )
    model = chain(tok2vec, list2ragged(), head, ragged2list())
    model.name = "torch_ner_tagger"
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", head)
    model.attrs["resize_output"] = head.attrs["resize_output"]
    return model
