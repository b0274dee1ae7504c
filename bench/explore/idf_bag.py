"""Exploration prototype (issue 15, round 7): TorchTextCat.v3's bag with each
n-gram weighted by its inverse document frequency in the training docs
(IDF_TRAIN, a .spacy file; n-grams up to IDF_NGRAM, default 1; scaled so
that the mean weight of a training n-gram occurrence is 1) and, with IDF_MODE=idfl2, each doc's weights
L2-normalised (tf-idf, as a linear model on imdb likes it). It lost to the
plain bag under Adam (docs/benchmarks.md, round 7), so it is not shipped.
Loaded with `spacy train --code bench/explore/idf_bag.py`."""
import os
import numpy
import spacy
import torch
from torch import nn
from spacy.tokens import DocBin
from spacy_pytorch_shim.models import textcat, features

MODE = os.environ.get("IDF_MODE", "idf")  # idf | idfl2


def _load_idf(rows):
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(os.environ["IDF_TRAIN"]).get_docs(nlp.vocab))
    layer = features.hashed_ngrams("LOWER", int(os.environ.get("IDF_NGRAM", "1")), rows)
    ids_per_doc = [features._ngram_ids(layer, [d.to_array(layer.attrs["attr_id"]).astype("uint64")]).dataXd
                   for d in docs]
    df = numpy.zeros(rows, dtype="float64")
    for ids in ids_per_doc:
        df[numpy.unique(ids)] += 1
    N = len(docs)
    idf = numpy.log((1 + N) / (1 + df)) + 1
    # scale so that the mean weight over training n-gram occurrences (each doc's first id is its bias) is 1
    tot = sum(idf[ids[1:]].sum() for ids in ids_per_doc)
    cnt = sum(len(ids) - 1 for ids in ids_per_doc)
    idf = idf / (tot / cnt)
    idf[0] = 1.0
    return torch.tensor(idf, dtype=torch.float32), cnt / N


_IDF = {}


def _forward(self, ids, lengths, subwords, subword_lengths, words, inverse, doc_lengths):
    weight = self.output.weight
    if "idf" not in _IDF:
        _IDF["idf"], _IDF["mean_len"] = _load_idf(weight.shape[0])
    idf = _IDF["idf"].to(weight.device)
    w = idf[ids]  # each doc's bias row (weight 1) and longer n-grams
    tok_w = idf[words][inverse]  # each token's word row, also for its subword mean
    offsets = textcat._offsets(lengths)
    if MODE == "idfl2":
        doc_ids = torch.repeat_interleave(torch.arange(len(lengths)), lengths.long())
        tok_doc = torch.repeat_interleave(torch.arange(len(doc_lengths)), doc_lengths.long())
        is_bias = torch.zeros_like(w, dtype=torch.bool)
        is_bias[offsets] = True
        sq = torch.zeros(len(lengths)).index_add_(0, doc_ids, torch.where(is_bias, 0.0, w * w))
        sq.index_add_(0, tok_doc, tok_w * tok_w)
        scale = (_IDF["mean_len"] ** 0.5) / sq.clamp(min=1e-6).sqrt()
        w = torch.where(is_bias, 1.0, w * scale[doc_ids])
        tok_w = tok_w * scale[tok_doc]
    per_text = nn.functional.embedding_bag(
        subwords, weight, textcat._offsets(subword_lengths), mode="mean"
    ) + nn.functional.embedding(words, weight)
    per_doc = nn.functional.embedding_bag(inverse, per_text, textcat._offsets(doc_lengths), mode="sum", per_sample_weights=tok_w)
    return self.output(ids, offsets, per_sample_weights=w) + per_doc


textcat.BagOfNgramsAndSubwords.forward = _forward
