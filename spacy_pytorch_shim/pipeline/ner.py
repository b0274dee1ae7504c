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

from . import biluo
from .base import TorchLabelledPipe

DEFAULT_NER_MODEL = """
[model]
@architectures = "spacy-pytorch-shim.TorchNERTagger.v2"
hidden_width = 128

[model.tok2vec]
@architectures = "spacy-pytorch-shim.TorchTok2Vec.v1"
width = 128
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [10000, 2000, 5000, 5000]

[model.tok2vec.encoder]
@architectures = "spacy-pytorch-shim.CNNEncoder.v2"
width = ${model.tok2vec.width}
depth = 4
window = 1
"""



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
    `doc.ents` to valid, non-overlapping spans (see `biluo.decode_biluo`)."""

    # get_loss sums over the batch's tokens (data-parallel training sums the
    # ranks' gradients as they are).
    loss_reduction = "sum"

    def __init__(self, vocab: Vocab, model: Model, name: str, *, outside_loss_weight: float = 1.0, scorer: Optional[Callable]):
        super().__init__(vocab, model, name, scorer=scorer, outside_loss_weight=outside_loss_weight)
        self._warned_labels: set = set()

    @property
    def tags(self) -> List[str]:
        return biluo.tag_names(self.labels)

    def n_outputs(self, n_labels: int) -> int:
        return biluo.n_tags(n_labels)

    def labels_from_examples(self, examples: Iterable[Example]) -> List[str]:
        labels: Dict[str, None] = {}
        for eg in examples:
            labels.update(dict.fromkeys(ent.label_ for ent in eg.reference.ents))
        return list(labels)

    def _no_labels(self) -> None:
        """No labels is a valid tagger (every token "O"), as with spaCy's `ner`:
        `spacy assemble` works, and labels can be added later."""

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
        return biluo.decode_biluo(log_probs, len(self.labels))

    def _log_probs(self, logits: numpy.ndarray) -> numpy.ndarray:
        """Log-softmax over the tags; tags of masked labels get -inf."""
        logits = logits.astype("float32", copy=True)
        tag_mask = biluo.tag_mask(self.label_mask())
        if tag_mask is not None:
            logits[:, tag_mask] = -numpy.inf
        logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0
        return logits - numpy.log(numpy.exp(logits).sum(axis=1, keepdims=True))

    def set_annotations(self, docs: Iterable[Doc], tag_ids: List[Ints1d]) -> None:
        tags = self.tags
        for doc, ids in zip(docs, tag_ids):
            doc.ents = biluo_tags_to_spans(doc, [tags[i] for i in ids])

    # -------------------------------------------------------------- training
    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.update")
        self.unmask(ent.label_ for eg in examples for ent in eg.reference.ents)
        self._sync_outputs()
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
