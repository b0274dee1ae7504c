"""`torch_ner`: a torch BILUO tagger decoded into valid entity spans."""
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy
from spacy import util
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline.ner import ner_score
from spacy.tokens import Doc, SpanGroup
from spacy.training import Example, biluo_tags_to_spans, validate_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model
from thinc.types import Floats2d

from . import biluo, distill
from .base import BASE_CFG_RULES, CfgRule, TorchLabelledPipe, is_number, is_optional_key

DEFAULT_NER_MODEL = """
[model]
@architectures = "spacy-pytorch-shim.TorchNERTagger.v2"
hidden_width = 128

[model.tok2vec]
@architectures = "spacy-pytorch-shim.TorchTok2Vec.v4"
width = 128
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [20000, 4000, 10000, 10000]
char_width = 32
max_chars = 20
word_dropout = 0.3

[model.tok2vec.encoder]
@architectures = "spacy-pytorch-shim.CNNEncoder.v2"
width = ${model.tok2vec.width}
depth = 4
window = 1
"""

# The least 1 - p(span) that a negative span's loss and gradient use (in
# float64: the gradient p / (1 - p) * d(log p) stays finite as p nears 1,
# where d(log p) shrinks with 1 - p).
NEGATIVE_SPAN_EPS = 1e-12


@Language.factory(
    "torch_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": Config().from_str(DEFAULT_NER_MODEL)["model"],
        "outside_loss_weight": 0.3,
        "incorrect_spans_key": None,
        "spans_key": None,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_torch_ner(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats2d]],
    outside_loss_weight: float,
    incorrect_spans_key: Optional[str],
    spans_key: Optional[str],
    scorer: Optional[Callable],
) -> "TorchEntityRecognizer":
    """Named entities from a torch tagger over BILUO tags. `outside_loss_weight`
    scales the loss of tokens whose gold tag is "O": most tokens are outside
    entities, and weighting them down trades a little precision for recall
    (0.3 with training dropout 0.1 gave btc test F 0.673 and wnut17 0.158;
    unweighted with dropout 0.2, 0.637 and 0.086).
    `incorrect_spans_key`: as spaCy's `ner`, the `doc.spans` key of the
    reference docs' spans known *not* to be entities (training pushes their
    probability down). `spans_key`: also store the predicted entities in
    `doc.spans[spans_key]`, with each one's probability in the group's
    `attrs["scores"]` (as spaCy's `spancat` stores its scores)."""
    return TorchEntityRecognizer(
        nlp.vocab,
        model,
        name,
        outside_loss_weight=outside_loss_weight,
        incorrect_spans_key=incorrect_spans_key,
        spans_key=spans_key,
        scorer=scorer,
    )


class TorchEntityRecognizer(TorchLabelledPipe):
    """Scores "O" plus B/I/L/U tags per label for every token and sets
    `doc.ents` to valid, non-overlapping spans (see `biluo.decode_biluo`).

    As spaCy's `ner`: entities already set on a doc (by an entity_ruler, with
    their kb_id) and blocked tokens are kept, and the entities found fill in
    around them; a label is predicted once an update has seen it in the gold
    data, so an untrained component (or one initialized without labels)
    predicts no entities."""

    # get_loss sums over the batch's tokens (data-parallel training sums the
    # ranks' gradients as they are).
    loss_reduction = "sum"
    cfg_rules = {
        **BASE_CFG_RULES,
        "outside_loss_weight": CfgRule("a number in (0, 1]", lambda v: is_number(v) and 0.0 < v <= 1.0),
        "incorrect_spans_key": CfgRule("null or a non-empty string (a doc.spans key)", is_optional_key),
        "spans_key": CfgRule("null or a non-empty string (a doc.spans key)", is_optional_key),
    }

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "ner",
        *,
        outside_loss_weight: float = 1.0,
        incorrect_spans_key: Optional[str] = None,
        spans_key: Optional[str] = None,
        scorer: Optional[Callable] = ner_score,
    ):
        super().__init__(
            vocab,
            model,
            name,
            scorer=scorer,
            outside_loss_weight=outside_loss_weight,
            incorrect_spans_key=incorrect_spans_key,
            spans_key=spans_key,
        )

    @property
    def tags(self) -> List[str]:
        return biluo.tag_names(self.labels)

    def n_outputs(self, n_labels: int) -> int:
        return biluo.n_tags(n_labels)

    @property
    def move_names(self) -> List[str]:
        """The tags, under the name spaCy's `ner` gives its moves (the same
        names, "O" then B/I/L/U-label)."""
        return self.tags

    def example_labels(self, example: Example) -> List[str]:
        labels = [ent.label_ for ent in example.reference.ents]
        for label in labels:
            _check_not_negated(label)
        return labels

    def _no_labels(self) -> None:
        """No labels is a valid tagger (every token "O"), as with spaCy's `ner`:
        `spacy assemble` works, and labels can be added later."""

    def _configure(self, sample: List[Example], counts: Dict) -> None:
        util.check_lexeme_norms(self.vocab, "torch_ner")
        # Untrained labels are masked: nothing is predicted until updates train them.
        self.cfg["masked_labels"] = list(self.labels)

    # ------------------------------------------------------------ prediction
    def predict(self, docs: Iterable[Doc]) -> List[Floats2d]:
        """Per doc, the tags' log-probabilities (n_tokens, n_tags), with the
        tags that cannot apply at -inf: masked labels' tags, and every tag but
        "O" on tokens already in an entity or blocked (those are kept)."""
        docs = list(docs)
        n_tags = len(self.tags)
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((len(doc), n_tags), dtype="float32") for doc in docs]
        logits = self.model.predict(docs)
        log_probs = [self._log_probs(self.model.ops.to_numpy(x)) for x in logits]
        for doc, x in zip(docs, log_probs):
            x[_preset_tokens(doc), 1:] = -numpy.inf
        return log_probs

    def _log_probs(self, logits: numpy.ndarray, dtype: str = "float32") -> numpy.ndarray:
        """Log-softmax over the tags; tags of masked labels get -inf."""
        logits = logits.astype(dtype, copy=True)
        tag_mask = biluo.tag_mask(self.label_mask())
        if tag_mask is not None:
            logits[:, tag_mask] = -numpy.inf
        logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0
        return logits - numpy.log(numpy.exp(logits).sum(axis=1, keepdims=True))

    def set_annotations(self, docs: Iterable[Doc], log_probs: List[Floats2d]) -> None:
        """The best valid entities (see `biluo.decode_biluo`), added to the
        doc's own; with `spans_key`, also `doc.spans[spans_key]` with each
        entity's probability in `attrs["scores"]`."""
        tags = self.tags
        n_labels = len(self.labels)
        docs = list(docs)
        spans_key = self.cfg.get("spans_key")
        for doc, x, ids in zip(docs, log_probs, biluo.decode_biluo(log_probs, n_labels)):
            found = biluo_tags_to_spans(doc, [tags[i] for i in ids])
            iob_type = doc.to_array(["ENT_IOB", "ENT_TYPE"])
            blocked = [doc[int(i) : int(i) + 1] for i in numpy.flatnonzero((iob_type[:, 0] == 3) & (iob_type[:, 1] == 0))]
            doc.set_ents(list(doc.ents) + found, blocked=blocked, default="outside")
            if spans_key is not None:
                group = SpanGroup(doc, name=spans_key, spans=found)
                group.attrs["scores"] = biluo.entity_probabilities(x, ids, n_labels)
                doc.spans[spans_key] = group

    # -------------------------------------------------------------- training
    def _gold_labels(self, examples: List[Example]) -> Iterable[str]:
        return (ent.label_ for eg in examples for ent in eg.reference.ents)

    def get_loss(self, examples: Iterable[Example], logits: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """Token-level cross-entropy over the tags, with gold-"O" tokens
        weighted by `outside_loss_weight` (the gradient; the reported loss is
        unweighted). Tokens without gold annotation ("-", misaligned) or with a
        label this component does not know are left out, like spaCy's own
        components skip missing values. With `incorrect_spans_key`, each
        negative span adds -log(1 - p(span)), p(span) its probability over
        the valid tag sequences (`biluo.SpanProbabilities`, the probability
        that `spans_key` reports)."""
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.get_loss")
        tag_index = {tag: i for i, tag in enumerate(self.tags)}
        tag_mask = biluo.tag_mask(self.label_mask())
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
            loss -= float(numpy.log(probs[numpy.flatnonzero(known), gold[known]] + 1e-8).sum())
            loss += self._add_negative_span_grads(eg, scores, d)
            if tag_mask is not None:
                d[:, tag_mask] = 0.0
            d_logits.append(self.model.ops.asarray(d))
        return loss, d_logits

    def _add_negative_span_grads(self, eg: Example, logits: numpy.ndarray, d: numpy.ndarray) -> float:
        """Add the gradient of the negative spans' loss to `d`; their loss."""
        key = self.cfg.get("incorrect_spans_key")
        if key is None or key not in eg.reference.spans:
            return 0.0
        gold = {(ent.start_char, ent.end_char, ent.label) for ent in eg.reference.ents}
        for span in eg.reference.spans[key]:
            if (span.start_char, span.end_char, span.label) in gold:
                raise ValueError(Errors.E868.format(span=(span.start_char, span.end_char, span.label_)))
        label_index = {label: i for i, label in enumerate(self.labels)}
        aligned = eg.get_aligned_spans_y2x(eg.reference.spans[key], allow_overlap=True)
        spans = [(span.start, span.end, label_index[span.label_]) for span in aligned if span.label_ in label_index]
        if not spans:
            return 0.0
        log_probs = self._log_probs(logits, dtype="float64")
        negative = biluo.SpanProbabilities(log_probs, spans, len(self.labels))
        rest = numpy.maximum(1.0 - negative.probabilities, NEGATIVE_SPAN_EPS)
        # d(-log(1 - p)) = p / (1 - p) d(log p), through the log-softmax.
        grad = negative.gradient(negative.probabilities / rest)
        d += grad - numpy.exp(log_probs) * grad.sum(axis=1, keepdims=True)
        return float(-numpy.log(rest).sum())

    def _gold_ids(self, eg: Example, tag_index: Dict[str, int]) -> numpy.ndarray:
        """Gold tag index per predicted token, -1 where missing or unknown
        (`update` adds the gold's labels first; `get_loss` called directly
        leaves unknown ones out)."""
        ids = numpy.full((len(eg.predicted),), -1, dtype="int64")
        for i, tag in enumerate(eg.get_aligned_ner()):
            if tag in tag_index:
                ids[i] = tag_index[tag]
        return ids

    def distillation_loss(self, examples: List[Example], logits: List[Floats2d], teacher_logits: List[Floats2d], *, teacher: distill.Teacher, use_gold: bool) -> Tuple[float, List[Floats2d]]:
        gold = None
        if use_gold:
            tag_index = {tag: i for i, tag in enumerate(self.tags)}
            gold = [self._gold_ids(eg, tag_index) for eg in examples]
        return distill.ner_distillation_loss(
            self.model.ops,
            teacher,
            labels=self.labels,
            label_mask=self.label_mask(),
            outside_loss_weight=self.cfg["outside_loss_weight"],
            annotated=self.continual.annotated if use_gold else frozenset(),
            logits=logits,
            teacher_logits=teacher_logits,
            gold=gold,
        )


def _check_not_negated(label: str) -> None:
    """spaCy's "!LABEL" notation for negative entities is an error (E869)."""
    if label.startswith("!"):
        raise ValueError(Errors.E869.format(label=label))


def _preset_tokens(doc: Doc) -> numpy.ndarray:
    """Tokens already in an entity, or blocked (B without a type): kept as they are."""
    iob = doc.to_array("ENT_IOB")
    return (iob == 1) | (iob == 3)
