"""Learning without forgetting for the torch components: a frozen copy of the
component (the *teacher*, the model `nlp.resume_training()` copies) supplies
soft targets for what the training data does not annotate.

Every loss here is a cross-entropy against one soft target per token (NER)
or doc (textcat), over a subset of the student's outputs:

- `rehearse` (spaCy's `nlp.rehearse`): the gold is ignored; the student's
  distribution over the teacher's labels is held to the teacher's. Labels
  the teacher does not have are left free (a softmax over the teacher's
  outputs only), as their annotation is missing.
- Continued training (`ContinualSettings` set on the component, see
  `spacy_pytorch_shim.continual`): the gold where the data annotates, the
  teacher where it does not. NER: a gold entity is a one-hot target; a gold
  "O" says "no entity of the annotated labels" and the teacher's
  distribution over "O" and the other labels is the target there (missing);
  a label listed as annotated takes "O" as "none" (negative). Textcat: a
  label with a value in `doc.cats` is annotated, one without is missing and
  the teacher fills it in; with exclusive classes a positive label makes the
  others negative, and the teacher's distribution over its own labels is
  kept as well (learning without forgetting, Li & Hoiem 2016).

The components own the state and the update (`teacher`, `continual`,
`rehearse`, `distillation_loss`); the losses here are plain functions of the
logits, the labels and the gold the components read (torch_ner's tag ids,
the text classifiers' truths), independent of the components' `get_loss`.
"""
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy
from spacy.training import Example
from thinc.api import Model, Ops
from thinc.types import Floats2d

from . import biluo

EPS = 1e-8


@dataclass(frozen=True)
class Teacher:
    """The frozen model and the labels it has outputs for (as the component's
    labels were when it was copied), masked ones excluded from its targets.
    No model for stored targets: its outputs come with the examples."""

    model: Optional[Model]
    labels: Tuple[str, ...]
    masked: FrozenSet[str]

    @property
    def known(self) -> Tuple[str, ...]:
        return tuple(label for label in self.labels if label not in self.masked)


@dataclass(frozen=True)
class TeacherTargets:
    """A teacher's outputs for one doc, computed once and stored with it
    (`spacy teacher-targets`; read by "spacy-pytorch-shim.DistillationCorpus.v1"
    into the reference doc's `user_data[TARGETS]`): per component name, the
    teacher model's output for the doc (NER: its tags' scores per token;
    textcat: its labels' logits) and the teacher (labels; no model). The
    student learns them at `temperature`, its loss times `weight`."""

    outputs: Dict[str, numpy.ndarray]
    teachers: Dict[str, Teacher]
    temperature: float
    weight: float


TARGETS = "spacy-pytorch-shim.teacher_targets"


def stored_targets(example: Example, name: str) -> Optional[TeacherTargets]:
    """The stored teacher targets of `example` for component `name`, if any."""
    targets = example.reference.user_data.get(TARGETS)
    return targets if isinstance(targets, TeacherTargets) and name in targets.outputs else None


def at_temperature(outputs: Any, factor: float) -> Any:
    """A model's outputs (one array per doc, or one row per doc) times `factor`."""
    return [x * factor for x in outputs] if isinstance(outputs, list) else outputs * factor


@dataclass(frozen=True)
class ContinualSettings:
    """How a component's continued training reads the gold. `annotated`: for
    NER, the labels whose entities the new data annotates completely (a token
    outside them is not one of them); the teacher fills in the others."""

    annotated: FrozenSet[str]


# ------------------------------------------------------------------ helpers
def _teacher_columns(labels: Sequence[str], teacher: Teacher, columns) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """For each label the teacher knows (and the student, with `labels`,
    still has): its columns in the teacher's output and in the student's,
    via `columns(index)` giving a label's columns."""
    t_cols, s_cols = [], []
    for t_index, label in enumerate(teacher.labels):
        if label in teacher.masked or label not in labels:
            continue
        t_cols.extend(columns(t_index))
        s_cols.extend(columns(labels.index(label)))
    return numpy.asarray(t_cols, dtype="int64"), numpy.asarray(s_cols, dtype="int64")


def _softmax_over(logits: numpy.ndarray, allowed: numpy.ndarray) -> numpy.ndarray:
    """Row-wise softmax over the allowed columns; 0 elsewhere (rows with no
    allowed column are all 0)."""
    z = numpy.where(allowed, logits, -numpy.inf)
    top = z.max(axis=1, keepdims=True)
    top[~numpy.isfinite(top)] = 0.0
    e = numpy.where(allowed, numpy.exp(z - top), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return e / numpy.where(total > 0, total, 1.0)


def _soft_cross_entropy(logits: numpy.ndarray, allowed: numpy.ndarray, target: numpy.ndarray, weight: Optional[numpy.ndarray] = None) -> Tuple[float, numpy.ndarray]:
    """Cross-entropy of the softmax over `allowed` columns against `target`
    (rows summing to 1 over allowed columns, or all 0 to skip the row), and
    its gradient for the logits."""
    probs = _softmax_over(logits, allowed)
    active = (target.sum(axis=1, keepdims=True) > 0).astype("float32")
    grad = (probs - target) * allowed * active
    loss_rows = -(target * numpy.log(probs + EPS)).sum(axis=1)
    if weight is not None:
        grad *= weight[:, None]
        loss_rows = loss_rows * weight
    return float(loss_rows.sum()), grad.astype("float32")


def _renormalize(target: numpy.ndarray, fallback_column: Optional[int] = None) -> numpy.ndarray:
    total = target.sum(axis=1, keepdims=True)
    out = target / numpy.where(total > 0, total, 1.0)
    if fallback_column is not None:
        out[total[:, 0] <= 0, fallback_column] = 1.0
    return out


# ---------------------------------------------------------------------- NER
def ner_distillation_loss(
    ops: Ops,
    teacher: Teacher,
    *,
    labels: Sequence[str],
    label_mask: Optional[numpy.ndarray],
    outside_loss_weight: float,
    annotated: FrozenSet[str],
    logits: List[Floats2d],
    teacher_logits: List[Floats2d],
    gold: Optional[List[numpy.ndarray]],
) -> Tuple[float, List[Floats2d]]:
    """Per token, over the BILUO tags (see the module docstring); gold-"O"
    targets weighted by `outside_loss_weight` as in torch_ner's `get_loss`;
    summed. `gold`: each doc's gold tag ids (-1: missing), or None to
    rehearse; `annotated`: the labels a gold "O" rules out."""
    n_tags = biluo.n_tags(len(labels))
    per_label = lambda i: [biluo.tag_column(i, p) for p in (biluo.B, biluo.I, biluo.L, biluo.U)]
    t_cols, s_cols = _teacher_columns(labels, teacher, per_label)
    t_cols, s_cols = numpy.concatenate([[0], t_cols]).astype("int64"), numpy.concatenate([[0], s_cols]).astype("int64")
    student_masked = biluo.tag_mask(label_mask)
    usable = numpy.ones(n_tags, dtype=bool) if student_masked is None else ~student_masked
    teacher_allowed = numpy.zeros(n_tags, dtype=bool)
    teacher_allowed[s_cols] = True
    annotated_tags = numpy.zeros(n_tags, dtype=bool)
    if gold is not None:
        for label in annotated:
            if label in labels:
                annotated_tags[per_label(list(labels).index(label))] = True
    loss = 0.0
    d_logits = []
    for i, (z, zt) in enumerate(zip(logits, teacher_logits)):
        z = ops.to_numpy(z).astype("float32")
        zt = ops.to_numpy(zt).astype("float32")
        n = len(z)
        if n == 0:
            d_logits.append(ops.asarray(numpy.zeros_like(z)))
            continue
        t_allowed = numpy.zeros(zt.shape[1], dtype=bool)
        t_allowed[t_cols] = True
        teacher_probs = numpy.zeros((n, n_tags), dtype="float32")
        teacher_probs[:, s_cols] = _softmax_over(zt, t_allowed)[:, t_cols]
        ids = gold[i] if gold is not None else numpy.full((n,), -1, dtype="int64")
        allowed = numpy.tile(teacher_allowed & usable, (n, 1))
        target = teacher_probs.copy()
        entity = numpy.flatnonzero(ids > 0)
        allowed[entity] = usable
        target[entity] = 0.0
        target[entity, ids[entity]] = 1.0
        outside = ids == 0
        allowed[outside] |= annotated_tags & usable
        target[numpy.ix_(outside, annotated_tags)] = 0.0
        target[outside] = _renormalize(target[outside], fallback_column=0)
        target *= allowed
        weight = 1.0 - (1.0 - outside_loss_weight) * target[:, 0] * outside
        token_loss, d = _soft_cross_entropy(z, allowed, target, weight)
        loss += token_loss
        d_logits.append(ops.asarray(d))
    return loss, d_logits


# ------------------------------------------------------------------ textcat
@dataclass(frozen=True)
class TextcatBatch:
    """A text classifier's batch for the losses below: its labels and masked
    labels, the student's and the teacher's logits, and the gold as
    (truths, not_missing) arrays, or None to rehearse."""

    labels: Sequence[str]
    label_mask: Optional[numpy.ndarray]
    logits: Floats2d
    teacher_logits: Floats2d
    gold: Optional[Tuple[numpy.ndarray, numpy.ndarray]]


def _textcat_parts(ops: Ops, teacher: Teacher, batch: TextcatBatch, activate):
    z = ops.to_numpy(batch.logits).astype("float32")
    zt = ops.to_numpy(batch.teacher_logits).astype("float32")
    t_cols, s_cols = _teacher_columns(batch.labels, teacher, lambda i: [i])
    t_allowed = numpy.zeros(zt.shape[1], dtype=bool)
    t_allowed[t_cols] = True
    teacher_probs = numpy.zeros_like(z)
    teacher_probs[:, s_cols] = activate(zt, t_allowed)[:, t_cols]
    teacher_allowed = numpy.zeros(z.shape[1], dtype=bool)
    teacher_allowed[s_cols] = True
    usable = numpy.ones(z.shape[1], dtype=bool) if batch.label_mask is None else ~batch.label_mask
    return z, teacher_probs, teacher_allowed & usable, usable


def exclusive_distillation_loss(ops: Ops, teacher: Teacher, batch: "TextcatBatch") -> Tuple[float, Floats2d]:
    """Per doc, over the softmax (see the module docstring); averaged."""
    z, teacher_probs, teacher_allowed, usable = _textcat_parts(ops, teacher, batch, _softmax_over)
    n = len(z)
    # Teacher term: the student's distribution over the teacher's labels.
    keep_allowed = numpy.tile(teacher_allowed, (n, 1))
    if batch.gold is None:
        loss, d = _soft_cross_entropy(z, keep_allowed, teacher_probs * keep_allowed)
        return loss / n, ops.asarray(d / n)
    truths, not_missing = batch.gold
    positive = ((truths * not_missing) >= 1.0).any(axis=1)
    # Gold term: one-hot over every label where a label is positive; else the
    # labels given as 0 are ruled out and the teacher fills in the rest.
    gold_allowed = numpy.tile(usable, (n, 1))
    gold_target = truths * not_missing
    negative = (not_missing > 0) & ~positive[:, None]
    filled = numpy.where(negative, 0.0, teacher_probs)
    gold_allowed[~positive] &= teacher_allowed[None, :] | negative[~positive]
    gold_target[~positive] = _renormalize(filled[~positive])
    gold_target *= gold_allowed
    loss_gold, d_gold = _soft_cross_entropy(z, gold_allowed, gold_target)
    keep_target = numpy.where(positive[:, None], teacher_probs * keep_allowed, 0.0)
    loss_keep, d_keep = _soft_cross_entropy(z, keep_allowed, keep_target)
    return (loss_gold + loss_keep) / n, ops.asarray((d_gold + d_keep) / n)


def _sigmoid(z: numpy.ndarray, allowed: numpy.ndarray) -> numpy.ndarray:
    return numpy.where(allowed, 1.0 / (1.0 + numpy.exp(-z)), 0.0)


def multilabel_distillation_loss(ops: Ops, teacher: Teacher, batch: "TextcatBatch") -> Tuple[float, Floats2d]:
    """Per doc and label, binary cross-entropy against the gold where
    `doc.cats` has the label, else the teacher's probability; averaged."""
    z, teacher_probs, teacher_allowed, usable = _textcat_parts(ops, teacher, batch, _sigmoid)
    n = len(z)
    weight = numpy.tile(teacher_allowed, (n, 1)).astype("float32")
    target = teacher_probs
    if batch.gold is not None:
        truths, not_missing = batch.gold
        target = numpy.where(not_missing > 0, truths, teacher_probs)
        weight = numpy.maximum(weight, not_missing) * usable
    probs = 1.0 / (1.0 + numpy.exp(-z))
    grad = (probs - target) * weight
    loss = -(weight * (target * numpy.log(probs + EPS) + (1 - target) * numpy.log(1 - probs + EPS))).sum()
    return float(loss) / n, ops.asarray(grad.astype("float32") / n)


__all__ = [
    "ContinualSettings",
    "TARGETS",
    "Teacher",
    "TeacherTargets",
    "TextcatBatch",
    "at_temperature",
    "exclusive_distillation_loss",
    "multilabel_distillation_loss",
    "ner_distillation_loss",
    "stored_targets",
]
