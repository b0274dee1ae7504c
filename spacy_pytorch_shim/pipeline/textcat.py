"""`torch_textcat` (exclusive classes) and `torch_textcat_multilabel`."""
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example, validate_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model
from thinc.types import Floats2d

from .base import TorchLabelledPipe

DEFAULT_TEXTCAT_MODEL = """
[model]
@architectures = "spacy-pytorch-shim.TorchTextCat.v1"
exclusive_classes = true
hidden_width = 128
dropout = 0.1
ngram_size = 2
ngram_rows = 65536

[model.tok2vec]
@architectures = "spacy-pytorch-shim.TorchTok2Vec.v1"
width = 96
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]

[model.tok2vec.encoder]
@architectures = "spacy-pytorch-shim.CNNEncoder.v1"
width = ${model.tok2vec.width}
depth = 2
window = 1
dropout = 0.1
"""
DEFAULT_MULTILABEL_MODEL = DEFAULT_TEXTCAT_MODEL.replace(
    "exclusive_classes = true", "exclusive_classes = false"
)
# spaCy's textcat score weights: cats_score drives model selection.
SCORE_WEIGHTS = {
    "cats_score": 1.0,
    "cats_score_desc": None,
    "cats_micro_p": None,
    "cats_micro_r": None,
    "cats_micro_f": None,
    "cats_macro_p": None,
    "cats_macro_r": None,
    "cats_macro_f": None,
    "cats_macro_auc": None,
    "cats_f_per_type": None,
}


@Language.factory(
    "torch_textcat",
    assigns=["doc.cats"],
    default_config={
        "model": Config().from_str(DEFAULT_TEXTCAT_MODEL)["model"],
        "threshold": 0.0,
        "scorer": {"@scorers": "spacy.textcat_scorer.v2"},
    },
    default_score_weights=SCORE_WEIGHTS,
)
def make_torch_textcat(
    nlp: Language, name: str, model: Model[List[Doc], Floats2d], threshold: float, scorer: Optional[Callable]
) -> "TorchTextCategorizer":
    """Exclusive text classification (softmax) with a torch model."""
    return TorchTextCategorizer(nlp.vocab, model, name, exclusive=True, threshold=threshold, scorer=scorer)


@Language.factory(
    "torch_textcat_multilabel",
    assigns=["doc.cats"],
    default_config={
        "model": Config().from_str(DEFAULT_MULTILABEL_MODEL)["model"],
        "threshold": 0.5,
        "scorer": {"@scorers": "spacy.textcat_multilabel_scorer.v2"},
    },
    default_score_weights=SCORE_WEIGHTS,
)
def make_torch_textcat_multilabel(
    nlp: Language, name: str, model: Model[List[Doc], Floats2d], threshold: float, scorer: Optional[Callable]
) -> "TorchTextCategorizer":
    """Multi-label text classification (independent sigmoids) with a torch model."""
    return TorchTextCategorizer(nlp.vocab, model, name, exclusive=False, threshold=threshold, scorer=scorer)


class TorchTextCategorizer(TorchLabelledPipe):
    """Sets `doc.cats` from a torch model's label logits: softmax over the
    labels for exclusive classes, an independent sigmoid per label otherwise."""

    def __init__(self, vocab: Vocab, model: Model, name: str, *, exclusive: bool, threshold: float, scorer: Optional[Callable]):
        model_exclusive = model.attrs.get("exclusive_classes")
        if model_exclusive is not None and model_exclusive != exclusive:
            factory = "torch_textcat" if exclusive else "torch_textcat_multilabel"
            raise ValueError(
                f"Component '{name}' ({factory}) needs a model with exclusive_classes = "
                f"{str(exclusive).lower()}, but the model has exclusive_classes = "
                f"{str(model_exclusive).lower()}"
            )
        super().__init__(vocab, model, name, scorer=scorer, exclusive=exclusive, threshold=threshold)

    @property
    def exclusive(self) -> bool:
        return self.cfg["exclusive"]

    def labels_from_examples(self, examples: Iterable[Example]) -> List[str]:
        labels: Dict[str, None] = {}
        for eg in examples:
            labels.update(dict.fromkeys(eg.reference.cats))
        return list(labels)

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None, labels: Optional[Iterable[str]] = None) -> None:
        sample = self._initialize_labels(get_examples, labels)
        self._validate_categories(sample)
        self._finish_initialize(sample)

    def predict(self, docs: Iterable[Doc]) -> Floats2d:
        docs = list(docs)
        if not docs:
            return self.model.ops.alloc2f(0, len(self.labels))
        return self._activate(self.model.predict(docs))

    def _activate(self, logits: Floats2d) -> Floats2d:
        """Probabilities from logits, with masked labels at exactly 0."""
        xp = self.model.ops.xp
        mask = self.label_mask()
        if self.exclusive:
            if mask is not None:
                logits = logits.copy()
                logits[:, xp.asarray(mask)] = -xp.inf
            return self.model.ops.softmax(logits, axis=-1)
        probs = self.model.ops.sigmoid(logits)
        if mask is not None:
            probs[:, xp.asarray(mask)] = 0.0
        return probs

    def set_annotations(self, docs: Iterable[Doc], scores: Floats2d) -> None:
        labels = self.labels
        for doc, row in zip(docs, self.model.ops.to_numpy(scores).tolist()):
            doc.cats.update(zip(labels, row))

    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.update")
        self._validate_categories(examples)
        self.unmask(
            label for eg in examples for label, value in eg.reference.cats.items() if value > 0
        )
        return super().update(examples, drop=drop, sgd=sgd, losses=losses)

    def get_loss(self, examples: Iterable[Example], logits: Floats2d):
        """Cross-entropy against the gold cats (softmax or per-label sigmoid);
        labels missing from an example's cats are not penalised, like spaCy's
        textcat. Returns the loss and its gradient for the logits."""
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.get_loss")
        truths, not_missing = self._truths(examples)
        probs = self._activate(logits)
        d_logits = (probs - truths) * not_missing
        mask = self.label_mask()
        if mask is not None:
            d_logits[:, self.model.ops.xp.asarray(mask)] = 0.0
        eps = 1e-8
        xp = self.model.ops.xp
        if self.exclusive:
            loss = -(truths * not_missing * xp.log(probs + eps)).sum()
        else:
            loss = -(not_missing * (truths * xp.log(probs + eps) + (1 - truths) * xp.log(1 - probs + eps))).sum()
        n = max(len(examples), 1)
        return float(loss) / n, d_logits / n

    def _truths(self, examples: List[Example]):
        truths = numpy.zeros((len(examples), len(self.labels)), dtype="f")
        not_missing = numpy.ones_like(truths)
        for i, eg in enumerate(examples):
            cats = eg.reference.cats
            for j, label in enumerate(self.labels):
                if label in cats:
                    truths[i, j] = cats[label]
                else:
                    not_missing[i, j] = 0.0
        return self.model.ops.asarray(truths), self.model.ops.asarray(not_missing)

    def _validate_categories(self, examples: Iterable[Example]) -> None:
        for eg in examples:
            cats = eg.reference.cats
            for label, value in cats.items():
                if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise ValueError(
                        f"{self.name}: gold value {value!r} for label '{label}' is outside "
                        f"[0, 1] in the example with text {eg.reference.text[:60]!r}"
                    )
                if self.exclusive and value not in (0.0, 1.0):
                    raise ValueError(
                        f"{self.name}: exclusive classes need gold values 0 or 1, got "
                        f"{value!r} for label '{label}' in {eg.reference.text[:60]!r}"
                    )
            if self.exclusive and sum(1 for v in cats.values() if v == 1.0) > 1:
                positives = [label for label, v in cats.items() if v == 1.0]
                raise ValueError(
                    f"{self.name}: exclusive classes allow one positive label per doc, "
                    f"got {positives} in {eg.reference.text[:60]!r}; use "
                    f"torch_textcat_multilabel for multi-label data"
                )

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        validate_examples(examples, f"{type(self).__name__}.score")
        kwargs.setdefault("threshold", self.cfg["threshold"])
        kwargs.setdefault("labels", self.labels)
        if self.exclusive:
            kwargs.setdefault("positive_label", None)
        return self.scorer(examples, **kwargs)


__all__ = ["TorchTextCategorizer", "make_torch_textcat", "make_torch_textcat_multilabel"]
