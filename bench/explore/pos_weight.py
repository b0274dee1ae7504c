"""Prototype for issue 15 (docs/benchmarks.md): the multi-label component's
binary cross-entropy with each label's positives weighted by
(negatives / positives) ** POS_WEIGHT_POWER over the training set (0: off).
With weight w the sigmoid's 0.5 threshold sits where the unweighted model's
probability is 1 / (1 + w), i.e. lower for rarer labels. Loaded with --code."""
import os

import numpy

from spacy_pytorch_shim.pipeline.textcat import TorchMultiLabelTextCategorizer as C

POWER = float(os.environ.get("POS_WEIGHT_POWER", "0.5"))
_init, _initialize, _get_loss = C.__init__, C.initialize, C.get_loss


def __init__(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.cfg.setdefault("pos_weight", [])  # a key of the saved cfg


def initialize(self, get_examples, *, nlp=None, labels=None):
    _initialize(self, get_examples, nlp=nlp, labels=labels)
    pos = numpy.zeros(len(self.labels), dtype="f"); seen = numpy.zeros_like(pos)
    for eg in get_examples():
        for j, label in enumerate(self.labels):
            if label in eg.reference.cats:
                seen[j] += 1
                pos[j] += eg.reference.cats[label]
    w = ((seen - pos).clip(1) / pos.clip(1)) ** POWER
    self.cfg["pos_weight"] = [float(x) for x in w]
    print("pos_weight", POWER, "min %.2f median %.2f max %.2f" % (w.min(), numpy.median(w), w.max()), flush=True)


def get_loss(self, examples, scores):
    loss, d = _get_loss(self, examples, scores)
    if not self.cfg["pos_weight"]:
        return loss, d
    truths, _ = self._truths(list(examples))
    w = self.model.ops.asarray1f(self.cfg["pos_weight"])
    # d/dlogit of -w y log p - (1-y) log(1-p) is p (w y + 1 - y) - w y; the
    # unweighted one (p - y) scaled where y = 1 by w, as the base's mask keeps.
    return loss, d * (1 + (w - 1) * truths)


C.__init__, C.initialize, C.get_loss = __init__, initialize, get_loss
