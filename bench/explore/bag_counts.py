"""Exploration prototype (issue 15, round 10): how TorchTextCat.v3's bag
counts a doc's features, for long reviews (imdb), where the summed bag's
dev score peaks early and falls. BAG_MODE=binary: each distinct n-gram and
each distinct token text (its word row and subwords) of a doc counts once
(binarised counts, as in Wang & Manning 2012's NBSVM); BAG_MODE=sqrt: the
doc's n-gram and subword sum (the bias row apart) divided by the square
root of its token count. Loaded with `spacy train --code bench/explore/bag_counts.py`."""
import os

import torch
from torch import nn

from spacy_pytorch_shim.models import textcat

MODE = os.environ.get("BAG_MODE", "binary")


def _doc_of(lengths: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(lengths)), lengths.long())


def _once_per_doc(rows: torch.Tensor, lengths: torch.Tensor, n_rows: int):
    """The distinct (doc, row) pairs: their rows and docs."""
    pairs = torch.unique(_doc_of(lengths) * n_rows + rows)
    return pairs % n_rows, pairs // n_rows


def _forward(self, ids, lengths, subwords, subword_lengths, words, inverse, doc_lengths):
    weight, sparse = self.output.weight, self.output.sparse
    n_docs = len(lengths)
    per_text = nn.functional.embedding_bag(
        subwords, weight, textcat._offsets(subword_lengths), mode="mean", sparse=sparse
    ) + nn.functional.embedding(words, weight, sparse=sparse)
    if MODE == "binary":
        rows, docs = _once_per_doc(ids, lengths, weight.shape[0])
        out = weight.new_zeros(n_docs, weight.shape[1]).index_add_(
            0, docs, nn.functional.embedding(rows, weight, sparse=self.output.sparse)
        )
        texts, docs = _once_per_doc(inverse, doc_lengths, max(len(per_text), 1))
        return out.index_add_(0, docs, per_text[texts])
    if MODE == "sqrt":
        bags = self.output(ids, textcat._offsets(lengths))
        per_doc = nn.functional.embedding_bag(inverse, per_text, textcat._offsets(doc_lengths), mode="sum")
        bias = weight[0].unsqueeze(0)
        scale = doc_lengths.clamp(min=1).to(weight.dtype).rsqrt().unsqueeze(1)
        return bias + (bags - bias + per_doc) * scale
    raise ValueError(f"BAG_MODE={MODE!r}: binary or sqrt")


textcat.BagOfNgramsAndSubwords.forward = _forward
