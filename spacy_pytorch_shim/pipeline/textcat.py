"""`torch_textcat` (exclusive classes) and `torch_textcat_multilabel`: two
classes over one base, like spaCy's `textcat` and `textcat_multilabel`."""
import math
import numbers
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline.textcat import textcat_score
from spacy.pipeline.textcat_multilabel import textcat_multilabel_score
from spacy.tokens import Doc
from spacy.training import Example, validate_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model
from thinc.types import Floats2d

from . import distill
from .base import BASE_CFG_RULES, CfgRule, TorchLabelledPipe, is_number, is_optional_key

# The default models are the efficiency presets' (configs/textcat.cfg and
# configs/textcat_multilabel.cfg): a bag of words and subwords, and for
# multi-label data a bag of words, bigrams and subwords with no length scaling.
DEFAULT_TEXTCAT_MODEL = """
[model]
@architectures = "spacy-pytorch-shim.TorchTextCat.v4"
exclusive_classes = true
hidden_width = 128
ngram_size = 1
ngram_rows = 262144
subword_min = 3
subword_max = 5
nO = null
tok2vec = null
"""
DEFAULT_MULTILABEL_MODEL = """
[model]
@architectures = "spacy-pytorch-shim.TorchTextCat.v3"
exclusive_classes = false
hidden_width = 128
ngram_size = 2
ngram_rows = 262144
subword_min = 3
subword_max = 5
nO = null
tok2vec = null
"""
EPS = 1e-8
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
    return TorchTextCategorizer(nlp.vocab, model, name, threshold=threshold, scorer=scorer)


@Language.factory(
    "torch_textcat_multilabel",
    assigns=["doc.cats"],
    default_config={
        "model": Config().from_str(DEFAULT_MULTILABEL_MODEL)["model"],
        "threshold": 0.5,
        "logit_adjustment": 0.0,
        "scorer": {"@scorers": "spacy.textcat_multilabel_scorer.v2"},
    },
    default_score_weights=SCORE_WEIGHTS,
)
def make_torch_textcat_multilabel(
    nlp: Language,
    name: str,
    model: Model[List[Doc], Floats2d],
    threshold: float,
    logit_adjustment: float,
    scorer: Optional[Callable],
) -> "TorchMultiLabelTextCategorizer":
    """Multi-label text classification (independent sigmoids) with a torch model."""
    return TorchMultiLabelTextCategorizer(
        nlp.vocab, model, name, threshold=threshold, logit_adjustment=logit_adjustment, scorer=scorer
    )


TEXTCAT_CFG_RULES = {
    **BASE_CFG_RULES,
    "threshold": CfgRule("a number in [0, 1]", lambda v: is_number(v) and 0.0 <= v <= 1.0),
}


def is_log_odds(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and is_number(v) and math.isfinite(v) for k, v in value.items()
    )


class TorchTextCategorizerBase(TorchLabelledPipe):
    """Sets `doc.cats` from a torch model's label logits; the subclasses say
    how logits become probabilities and which gold values are valid."""

    # Whether the labels exclude each other; kept in cfg (as saved before).
    exclusive: bool
    factory: str
    # get_loss averages over the batch's examples (data-parallel training
    # weights each rank's gradient by its share of the batch).
    loss_reduction = "mean"

    def __init__(self, vocab: Vocab, model: Model, name: str, *, threshold: float, scorer: Optional[Callable], **cfg):
        model_exclusive = model.attrs.get("exclusive_classes")
        if model_exclusive is not None and model_exclusive != self.exclusive:
            raise ValueError(
                f"Component '{name}' ({self.factory}) needs a model with exclusive_classes = "
                f"{str(self.exclusive).lower()}, but the model has exclusive_classes = "
                f"{str(model_exclusive).lower()}"
            )
        super().__init__(vocab, model, name, scorer=scorer, exclusive=self.exclusive, threshold=threshold, **cfg)

    def example_labels(self, example: Example) -> Iterable[str]:
        return example.reference.cats

    def _configure(self, sample: List[Example], counts: Dict[str, Any]) -> None:
        self._validate_gold(sample)

    def predict(self, docs: Iterable[Doc]) -> Floats2d:
        """Probabilities (n_docs, n_labels); a doc without tokens scores 0.0
        for every label, as with spaCy's textcat."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return self.model.ops.alloc2f(len(docs), len(self.labels))
        probs = self._activate(self._decision_logits(self.model.predict(docs)))
        empty = [i for i, doc in enumerate(docs) if not len(doc)]
        if empty:
            probs[self.model.ops.xp.asarray(empty)] = 0.0
        return probs

    def _decision_logits(self, logits: Floats2d) -> Floats2d:
        """The logits `predict` makes probabilities of; training uses the
        model's own."""
        return logits

    def _activate(self, logits: Floats2d) -> Floats2d:
        """Probabilities from logits, with masked labels at exactly 0."""
        raise NotImplementedError

    def _cross_entropy(self, probs: Floats2d, truths: Floats2d, not_missing: Floats2d) -> float:
        raise NotImplementedError

    def set_annotations(self, docs: Iterable[Doc], scores: Floats2d) -> None:
        labels = self.labels
        for doc, row in zip(docs, self.model.ops.to_numpy(scores).tolist()):
            doc.cats.update(zip(labels, row))

    def _gold_labels(self, examples: List[Example]) -> Iterable[str]:
        return (label for eg in examples for label, value in eg.reference.cats.items() if value > 0)

    def _gold_loss(self, examples: List[Example], logits: Floats2d) -> Tuple[float, Floats2d]:
        """get_loss takes what predict returns: the logits made probabilities."""
        return self.get_loss(examples, self._activate(logits))

    def get_loss(self, examples: Iterable[Example], scores: Floats2d) -> Tuple[float, Floats2d]:
        """Cross-entropy of `scores` (probabilities, as `predict` returns them)
        against the gold cats; labels missing from an example's cats are not
        penalised, like spaCy's textcat. Returns the loss and its gradient for
        the model's output, the logits (probabilities minus truths: the
        gradient of cross-entropy through softmax or sigmoid)."""
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.get_loss")
        truths, not_missing = self._truths(examples)
        probs = self.model.ops.asarray2f(scores)
        d_logits = (probs - truths) * not_missing
        mask = self.label_mask()
        if mask is not None:
            d_logits[:, self.model.ops.xp.asarray(mask)] = 0.0
        n = max(len(examples), 1)
        return self._cross_entropy(probs, truths, not_missing) / n, d_logits / n

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

    def _distillation_batch(self, examples: List[Example], logits: Floats2d, teacher_logits: Floats2d, use_gold: bool) -> distill.TextcatBatch:
        """What distill.py's text-classification losses take."""
        gold = None
        if use_gold:
            gold = tuple(self.model.ops.to_numpy(a) for a in self._truths(examples))
        return distill.TextcatBatch(self.labels, self.label_mask(), logits, teacher_logits, gold)

    def _validate_gold(self, examples: List[Example]) -> None:
        """Gold values are numbers (of any Python or numpy type) in [0, 1]."""
        for eg in examples:
            for label, value in eg.reference.cats.items():
                if not isinstance(value, (numbers.Real, numpy.bool_)) or not 0.0 <= float(value) <= 1.0:
                    raise ValueError(
                        f"{self.name}: gold value {value!r} for label '{label}' is outside "
                        f"[0, 1] in the example with text {eg.reference.text[:60]!r}"
                    )

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        validate_examples(examples, f"{type(self).__name__}.score")
        kwargs.setdefault("threshold", self.cfg["threshold"])
        kwargs.setdefault("labels", self.labels)
        return self.scorer(examples, **kwargs)


class TorchTextCategorizer(TorchTextCategorizerBase):
    """Exclusive classes: a softmax over the labels, one positive per doc."""

    exclusive = True
    factory = "torch_textcat"
    cfg_rules = {
        **TEXTCAT_CFG_RULES,
        "exclusive": CfgRule("true (exclusive classes; a multi-label component's cfg has false)", lambda v: v is True),
        "positive_label": CfgRule("null or one of the labels", is_optional_key),
    }

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "textcat",
        *,
        threshold: float,
        scorer: Optional[Callable] = textcat_score,
    ):
        super().__init__(vocab, model, name, threshold=threshold, scorer=scorer, positive_label=None)

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Iterable[str]] = None,
        positive_label: Optional[str] = None,
    ) -> None:
        """As spaCy's textcat: at least two labels (E867), and `positive_label`
        one of exactly two (E920, E919), then the scorer's `cats_score`."""
        self._initialize(get_examples, labels, {"positive_label": positive_label})

    def _configure(self, sample: List[Example], counts: Dict[str, Any], *, positive_label: Optional[str] = None) -> None:
        if len(self.labels) < 2:
            raise ValueError(Errors.E867)
        if positive_label is not None:
            if positive_label not in self.labels:
                raise ValueError(Errors.E920.format(pos_label=positive_label, labels=self.labels))
            if len(self.labels) != 2:
                raise ValueError(Errors.E919.format(pos_label=positive_label, labels=self.labels))
        self.cfg["positive_label"] = positive_label
        super()._configure(sample, counts)

    def distillation_loss(self, examples: List[Example], logits: Floats2d, teacher_logits: Floats2d, *, teacher: distill.Teacher, use_gold: bool) -> Tuple[float, Floats2d]:
        batch = self._distillation_batch(examples, logits, teacher_logits, use_gold)
        return distill.exclusive_distillation_loss(self.model.ops, teacher, batch)

    def _activate(self, logits: Floats2d) -> Floats2d:
        mask = self.label_mask()
        if mask is not None:
            logits = logits.copy()
            logits[:, self.model.ops.xp.asarray(mask)] = -self.model.ops.xp.inf
        return self.model.ops.softmax(logits, axis=-1)

    def _cross_entropy(self, probs: Floats2d, truths: Floats2d, not_missing: Floats2d) -> float:
        return float(-(truths * not_missing * self.model.ops.xp.log(probs + EPS)).sum())

    def _validate_gold(self, examples: List[Example]) -> None:
        super()._validate_gold(examples)
        for eg in examples:
            cats = eg.reference.cats
            for label, value in cats.items():
                if value not in (0.0, 1.0):
                    raise ValueError(
                        f"{self.name}: exclusive classes need gold values 0 or 1, got "
                        f"{value!r} for label '{label}' in {eg.reference.text[:60]!r}"
                    )
            positives = [label for label, v in cats.items() if v == 1.0]
            if len(positives) > 1:
                raise ValueError(
                    f"{self.name}: exclusive classes allow one positive label per doc, "
                    f"got {positives} in {eg.reference.text[:60]!r}; use "
                    f"torch_textcat_multilabel for multi-label data"
                )

    def _cfg_relations_problem(self, cfg: Dict[str, Any]) -> Optional[str]:
        if cfg["positive_label"] is not None and cfg["positive_label"] not in cfg["labels"]:
            return f"cfg['positive_label'] is {cfg['positive_label']!r}, not one of the labels {cfg['labels']}"
        return super()._cfg_relations_problem(cfg)

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        kwargs.setdefault("positive_label", self.cfg.get("positive_label"))
        return super().score(examples, **kwargs)


class TorchMultiLabelTextCategorizer(TorchTextCategorizerBase):
    """Multi-label: an independent sigmoid per label.

    `logit_adjustment` (tau, >= 0) is post-hoc logit adjustment for rare
    labels: `predict` raises each label's logit by tau * log(negatives /
    positives) of the label in the training data (counted at `initialize`,
    kept in cfg["label_log_odds"]), so the 0.5 threshold of a label seen in 1%
    of the texts falls where the model's own probability is 1 / (1 + 99 **
    tau). Training is unchanged and the order of the scores of each label is
    too (AUC cannot move); a rare label's probability seldom reaches 0.5, so
    its F is otherwise near 0. Labels added after `initialize` are not
    adjusted.
    """

    exclusive = False
    factory = "torch_textcat_multilabel"
    cfg_rules = {
        **TEXTCAT_CFG_RULES,
        "exclusive": CfgRule("false (multi-label; an exclusive component's cfg has true)", lambda v: v is False),
        "logit_adjustment": CfgRule(
            "a finite number >= 0 (0: off)", lambda v: is_number(v) and math.isfinite(v) and v >= 0
        ),
        "label_log_odds": CfgRule("a mapping of labels to finite numbers", is_log_odds),
    }
    # The label counts behind cfg["label_log_odds"] need every example.
    reads_whole_corpus = True

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "textcat_multilabel",
        *,
        threshold: float,
        logit_adjustment: float = 0.0,
        scorer: Optional[Callable] = textcat_multilabel_score,
    ):
        super().__init__(
            vocab, model, name, threshold=threshold, scorer=scorer,
            logit_adjustment=logit_adjustment, label_log_odds={},
        )

    def _count_example(self, example: Example, counts: Dict[str, Any]) -> None:
        """The examples, those with exactly one positive label, and per label
        the sum of its gold values and the examples that give one."""
        cats = example.reference.cats
        counts["examples"] = counts.get("examples", 0) + 1
        counts["single"] = counts.get("single", 0) + (sum(1 for v in cats.values() if v == 1.0) == 1)
        positives = counts.setdefault("positives", {})
        annotated = counts.setdefault("annotated", {})
        for label, value in cats.items():
            annotated[label] = annotated.get(label, 0) + 1
            positives[label] = positives.get(label, 0.0) + float(value)

    def _configure(self, sample: List[Example], counts: Dict[str, Any]) -> None:
        super()._configure(sample, counts)
        positives, annotated = counts.get("positives", {}), counts.get("annotated", {})
        self.cfg["label_log_odds"] = {
            label: math.log(max(annotated[label] - positives[label], 1.0) / max(positives[label], 1.0))
            for label in self.labels
            if annotated.get(label)
        }
        n_examples = counts.get("examples", 0)
        if n_examples > 1 and counts["single"] == n_examples:
            # Exactly one positive label in every example is exclusive data,
            # which a softmax models better than independent sigmoids.
            warnings.warn(
                f"{self.name}: every one of the {n_examples} training examples has exactly "
                f"one positive label: if the labels exclude each other, torch_textcat "
                f"(a softmax over the labels) usually does better than "
                f"torch_textcat_multilabel"
            )

    def _decision_logits(self, logits: Floats2d) -> Floats2d:
        tau = self.cfg["logit_adjustment"]
        log_odds = self.cfg["label_log_odds"]
        if not tau or not log_odds:
            return logits
        offsets = self.model.ops.asarray1f([tau * log_odds.get(label, 0.0) for label in self.labels])
        return logits + offsets

    def _cfg_relations_problem(self, cfg: Dict[str, Any]) -> Optional[str]:
        unknown = sorted(set(cfg["label_log_odds"]) - set(cfg["labels"]))
        if unknown:
            return f"cfg['label_log_odds'] has labels {unknown} that are not among the labels {cfg['labels']}"
        return super()._cfg_relations_problem(cfg)

    def distillation_loss(self, examples: List[Example], logits: Floats2d, teacher_logits: Floats2d, *, teacher: distill.Teacher, use_gold: bool) -> Tuple[float, Floats2d]:
        batch = self._distillation_batch(examples, logits, teacher_logits, use_gold)
        return distill.multilabel_distillation_loss(self.model.ops, teacher, batch)

    def _activate(self, logits: Floats2d) -> Floats2d:
        probs = self.model.ops.sigmoid(logits)
        mask = self.label_mask()
        if mask is not None:
            probs[:, self.model.ops.xp.asarray(mask)] = 0.0
        return probs

    def _cross_entropy(self, probs: Floats2d, truths: Floats2d, not_missing: Floats2d) -> float:
        xp = self.model.ops.xp
        return float(-(not_missing * (truths * xp.log(probs + EPS) + (1 - truths) * xp.log(1 - probs + EPS))).sum())


__all__ = [
    "TorchMultiLabelTextCategorizer",
    "TorchTextCategorizer",
    "TorchTextCategorizerBase",
    "make_torch_textcat",
    "make_torch_textcat_multilabel",
]
