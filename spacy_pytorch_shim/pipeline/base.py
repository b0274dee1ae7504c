"""What the torch components share: labels in cfg, masking of labels added
after training, and resizing the model to the saved labels before loading."""
from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy
import srsly
from spacy import util
from spacy.pipeline import TrainablePipe
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model

N_INIT_EXAMPLES = 10


class TorchLabelledPipe(TrainablePipe):
    """Base for components whose torch model has one output block per label.

    A label added after initialization (when the model may hold trained
    weights) gets new zero output rows and is *masked*: its outputs are left
    out of every prediction, so existing predictions stay exactly as they
    were, until an update sees it in the gold data; from then on it is
    trained like any other (spaCy's bias of -5000 would never learn).
    """

    def __init__(self, vocab: Vocab, model: Model, name: str, *, scorer: Optional[Callable], **cfg):
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict = {"labels": [], "masked_labels": [], **cfg}

    # ------------------------------------------------------------- labels
    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    def n_outputs(self, n_labels: int) -> int:
        """Rows of model output for `n_labels` labels."""
        return n_labels

    def add_label(self, label: str) -> int:
        if not isinstance(label, str):
            raise ValueError(f"{self.name}: labels must be strings, got {label!r}")
        if label in self.labels:
            return 0
        if "resize_output" not in self.model.attrs:
            raise ValueError(
                f"{self.name}: the model has no attrs['resize_output'], so label "
                f"'{label}' cannot be added"
            )
        self.cfg["labels"].append(label)
        if self.is_initialized:
            self.model.attrs["resize_output"](self.model, self.n_outputs(len(self.labels)))
            self.cfg["masked_labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    @property
    def is_initialized(self) -> bool:
        """True once the model's outputs have been sized to the labels."""
        return bool(self.cfg.get("initialized"))

    def unmask(self, labels: Iterable[str]) -> None:
        masked = self.cfg["masked_labels"]
        if masked:
            seen = set(labels)
            self.cfg["masked_labels"] = [label for label in masked if label not in seen]

    def label_mask(self) -> Optional[numpy.ndarray]:
        """Boolean array over labels, True where the label is masked."""
        masked = set(self.cfg["masked_labels"])
        if not masked:
            return None
        return numpy.asarray([label in masked for label in self.labels], dtype=bool)

    # -------------------------------------------------------- initialization
    def _initialize_labels(self, get_examples: Callable[[], Iterable[Example]], labels: Optional[Iterable[str]]) -> List[Example]:
        validate_get_examples(get_examples, f"{type(self).__name__}.initialize")
        if labels is None:
            # Labels added before initialize stay, like spaCy's own components.
            labels = list(self.labels) + self.labels_from_examples(get_examples())
        labels = list(dict.fromkeys(labels))
        if not labels:
            raise ValueError(
                f"{self.name}: no labels found in the training examples and none given "
                f"(pass labels= or use `spacy init labels`)"
            )
        # Keep the order of labels the component already knows.
        known = [label for label in self.labels if label in labels]
        self.cfg["labels"] = known + [label for label in labels if label not in known]
        self.cfg["masked_labels"] = []
        for label in self.labels:
            self.vocab.strings.add(label)
        self.model.attrs["resize_output"](self.model, self.n_outputs(len(self.labels)))
        return list(islice(get_examples(), N_INIT_EXAMPLES))

    def labels_from_examples(self, examples: Iterable[Example]) -> List[str]:
        raise NotImplementedError

    def _finish_initialize(self, sample: List[Example]) -> None:
        self.model.initialize(X=[eg.predicted for eg in sample])
        self.cfg["initialized"] = True

    # --------------------------------------------------------- serialization
    def _resize_to_labels(self) -> None:
        if self.labels:
            self.model.attrs["resize_output"](self.model, self.n_outputs(len(self.labels)))

    def to_disk(self, path, *, exclude=tuple()):
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            "model": lambda p: self.model.to_disk(p),
        }
        util.to_disk(path, serialize, exclude)

    def from_disk(self, path, *, exclude=tuple()):
        def load_cfg(p):
            self.cfg.update(srsly.read_json(p))
            self._resize_to_labels()

        deserialize = {
            "cfg": load_cfg,
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            "model": lambda p: self.model.from_disk(p),
        }
        util.from_disk(path, deserialize, exclude)
        return self

    def to_bytes(self, *, exclude=tuple()):
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "vocab": lambda: self.vocab.to_bytes(exclude=exclude),
            "model": lambda: self.model.to_bytes(),
        }
        return util.to_bytes(serialize, exclude)

    def from_bytes(self, bytes_data, *, exclude=tuple()):
        def load_cfg(b):
            self.cfg.update(srsly.json_loads(b))
            self._resize_to_labels()

        deserialize = {
            "cfg": load_cfg,
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: self.model.from_bytes(b),
        }
        util.from_bytes(bytes_data, deserialize, exclude)
        return self

