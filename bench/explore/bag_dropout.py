"""Exploration prototype (issue 15): n-gram dropout in the textcat bag
(TorchTextCat.v3): in training, each n-gram id and each token (its word row
and subword mean together, since round 11's per-text word rows) is kept
with probability 1 - rate and scaled by 1 / (1 - rate), the rate
being the caller's (`[training] dropout`), as word dropout in Iyyer et al.
2015's deep averaging networks. Loaded with `spacy train --code
bench/explore/bag_dropout.py`."""
import torch
from torch import nn

from spacy_pytorch_shim.models import textcat

_init = textcat.BagOfNgrams.__init__


def _init_with_dropout(self, rows: int, nO: int) -> None:
    _init(self, rows, nO)
    self.id_dropout = nn.Dropout(0.0)


def _forward(self, ids, lengths, subwords, subword_lengths, words, inverse, doc_lengths):
    weight = self.output.weight
    keep_ids = self.id_dropout(torch.ones(ids.shape, dtype=weight.dtype, device=weight.device))
    keep_tokens = self.id_dropout(torch.ones(inverse.shape, dtype=weight.dtype, device=weight.device))
    per_text = nn.functional.embedding_bag(
        subwords, weight, textcat._offsets(subword_lengths), mode="mean"
    ) + nn.functional.embedding(words, weight)
    per_doc = nn.functional.embedding_bag(
        inverse, per_text, textcat._offsets(doc_lengths), mode="sum", per_sample_weights=keep_tokens
    )
    return self.output(ids, textcat._offsets(lengths), per_sample_weights=keep_ids) + per_doc


textcat.BagOfNgrams.__init__ = _init_with_dropout
textcat.BagOfNgramsAndSubwords.forward = _forward
