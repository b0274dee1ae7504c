"""Exploration prototype (issue 15): train `torch_ner` with a linear-chain
CRF objective over the valid BILUO sequences instead of per-token
cross-entropy (docs/benchmarks.md, round 3: it gained on ncbi and lost on
btc, so it is not shipped). Loaded with `spacy train --code
bench/explore/crf_loss.py`; CRF_MIX and CRF_COST select the variants."""
import os

import numpy
import torch
from spacy.training import validate_examples

from spacy_pytorch_shim.pipeline import biluo
from spacy_pytorch_shim.pipeline.ner import TorchEntityRecognizer

NEG = -1e4
# CRF_MIX=1: add the token cross-entropy gradient (outside_loss_weight) to the CRF's.
# CRF_COST=c: softmax-margin (recall-oriented, Mohit et al. 2012): in the free
# partition, a wrong tag on a gold-entity token costs c, on a gold-O token c * outside_loss_weight.
MIX = os.environ.get("CRF_MIX") == "1"
COST = float(os.environ.get("CRF_COST", "0"))
_token_loss = TorchEntityRecognizer.get_loss


def _log_z(emissions, lengths, trans, start, end):
    alpha = emissions[:, 0] + start
    for t in range(1, emissions.shape[1]):
        stepped = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + emissions[:, t]
        alpha = torch.where((t < lengths)[:, None], stepped, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def crf_get_loss(self, examples, logits):
    examples = list(examples)
    validate_examples(examples, f"{type(self).__name__}.get_loss")
    tag_index = {tag: i for i, tag in enumerate(self.tags)}
    tag_mask = biluo.tag_mask(self.label_mask())
    scores = [self.model.ops.to_numpy(x) for x in logits]
    lengths = numpy.asarray([len(x) for x in scores])
    n_tags = len(self.tags)
    d_logits = [numpy.zeros_like(x) for x in scores]
    if not lengths.sum():
        return 0.0, [self.model.ops.asarray(d) for d in d_logits]
    trans, start, end = (torch.from_numpy(numpy.maximum(a, NEG)) for a in biluo.biluo_constraints(len(self.labels)))
    E = numpy.full((len(scores), lengths.max(), n_tags), 0.0, dtype="float32")
    G = numpy.zeros_like(E)
    C = numpy.zeros_like(E)
    for i, (eg, x) in enumerate(zip(examples, scores)):
        E[i, : len(x)] = x
        gold = self._gold_ids(eg, tag_index)
        known = numpy.flatnonzero(gold >= 0)
        G[i, known] = NEG
        G[i, known, gold[known]] = 0.0
        if COST:
            # cost-augmented: every wrong tag on a gold-entity token costs COST,
            # a wrong tag on a gold-O token costs COST * outside_loss_weight
            C[i, known] = numpy.where(gold[known] > 0, COST, COST * self.cfg["outside_loss_weight"])[:, None]
            C[i, known, gold[known]] = 0.0
    if tag_mask is not None:
        E[:, :, tag_mask] = NEG
    emissions = torch.from_numpy(E).requires_grad_()
    lengths_t = torch.from_numpy(lengths)
    free = _log_z(emissions + torch.from_numpy(C), lengths_t, trans, start, end)
    clamped = _log_z(emissions + torch.from_numpy(G), lengths_t, trans, start, end)
    ok = (lengths_t > 0) & (clamped > NEG / 2)
    loss = (free - clamped)[ok].sum()
    loss.backward()
    grad = emissions.grad.numpy()
    if tag_mask is not None:
        grad[:, :, tag_mask] = 0.0
    for i, n in enumerate(lengths):
        d_logits[i] = grad[i, :n].copy()
        if not MIX:  # the token loss adds them itself
            self._add_negative_span_grads(examples[i], scores[i], d_logits[i])
    if MIX:
        token_loss, d_token = _token_loss(self, examples, logits)
        d_logits = [d + self.model.ops.to_numpy(t) for d, t in zip(d_logits, d_token)]
    return float(loss.detach()), [self.model.ops.asarray(d) for d in d_logits]


TorchEntityRecognizer.get_loss = crf_get_loss
