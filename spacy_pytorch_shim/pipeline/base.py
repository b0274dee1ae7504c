"""What the torch components share: labels in cfg, masking of labels added
after training, resizing the model to the labels (deferred, so adding many
labels costs one resize), and loading that checks everything before it
changes anything."""
import numbers
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy
import srsly
import torch
from spacy import util
from spacy.errors import Errors
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model

from ..models.resize import resize_output
from ..models.serialization import (
    ModelLoadError,
    ModelState,
    ShapeOverrides,
    keep_gc_state,
    read_model_bytes,
    read_msgpack,
)
from ..models.torch_shim import TorchShim
from ..parallel.sync import labels_seen_on_any_rank
from . import distill

N_INIT_EXAMPLES = 10


class TorchLabelledPipe(TrainablePipe):
    """Base for components whose torch model has one output block per label.

    A label added after initialization (when the model may hold trained
    weights) gets new zero output rows and is *masked*: its outputs are left
    out of every prediction, so existing predictions stay exactly as they
    were, until an update sees it in the gold data; from then on it is
    trained like any other (spaCy's bias of -5000 would never learn).
    """

    # True when labels were added since the model's outputs were last sized.
    _outputs_stale = False

    def __init__(self, vocab: Vocab, model: Model, name: str, *, scorer: Optional[Callable], **cfg):
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict = {"labels": [], "masked_labels": [], **cfg}

    @property
    def model(self) -> Model:
        """The component's model, with outputs sized to the current labels."""
        self._sync_outputs()
        return TrainablePipe.model.__get__(self)

    @model.setter
    def model(self, value: Model) -> None:
        TrainablePipe.model.__set__(self, value)
        self._outputs_stale = False

    def _sync_outputs(self) -> None:
        """Do the one resize that the labels added since the last one need.
        (spaCy's Cython methods read the model without this property: every
        method that reaches them calls this first.)"""
        if self._outputs_stale:
            self._outputs_stale = False
            model = TrainablePipe.model.__get__(self)
            model.attrs["resize_output"](model, self.n_outputs(len(self.labels)))

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

    def _check_label(self, label: Any) -> None:
        if not isinstance(label, str):
            raise ValueError(f"{Errors.E187} Component '{self.name}' got {label!r}.")
        if not label:
            raise ValueError(f"Component '{self.name}': a label must be a non-empty string, got ''.")

    def add_label(self, label: str) -> int:
        """Add a label; after initialization its output rows are added (at the
        next use of the model, once for any number of labels) and masked."""
        self._check_label(label)
        if label in self.cfg["labels"]:
            return 0
        if "resize_output" not in TrainablePipe.model.__get__(self).attrs:
            raise ValueError(
                f"{self.name}: the model has no attrs['resize_output'], so label "
                f"'{label}' cannot be added"
            )
        self.cfg["labels"].append(label)
        if self.is_initialized:
            self.cfg["masked_labels"].append(label)
            self._outputs_stale = True
        self.vocab.strings.add(label)
        return 1

    @property
    def is_initialized(self) -> bool:
        """True once the model's outputs have been sized to the labels."""
        return bool(self.cfg.get("initialized"))

    def unmask(self, labels: Iterable[str]) -> None:
        masked = self.cfg["masked_labels"]
        if masked:
            seen = labels_seen_on_any_rank(masked, set(labels))
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
        labels = list(labels)
        for label in labels:
            self._check_label(label)
        labels = list(dict.fromkeys(labels))
        if not labels:
            self._no_labels()
        # Keep the order of labels the component already knows.
        known = [label for label in self.labels if label in labels]
        self.cfg["labels"] = known + [label for label in labels if label not in known]
        self.cfg["masked_labels"] = []
        for label in self.labels:
            self.vocab.strings.add(label)
        model = TrainablePipe.model.__get__(self)
        model.attrs["resize_output"](model, self.n_outputs(len(self.labels)))
        self._outputs_stale = False
        return list(islice(get_examples(), N_INIT_EXAMPLES))

    def labels_from_examples(self, examples: Iterable[Example]) -> List[str]:
        raise NotImplementedError

    def _no_labels(self) -> None:
        """Initialization found no labels (none given, none in the examples)."""
        raise ValueError(
            f"{Errors.E143.format(name=self.name)} (No labels were found in the "
            f"examples and none were given: pass labels= or use `spacy init labels`.)"
        )

    def _finish_initialize(self, sample: List[Example]) -> None:
        # No sample (labels given, get_examples yields nothing): a one-word
        # doc, as spaCy's Language.initialize uses without examples.
        docs = [eg.predicted for eg in sample] or [Doc(self.vocab, words=["x"])]
        self.model.initialize(X=docs)
        self.cfg["initialized"] = True

    # ------------------------------------------------------------- spaCy API
    def use_params(self, params: Dict) -> Iterator[None]:
        """TrainablePipe.use_params (a generator, as Language drives it), on
        the resized model: resizing inside it would lose the restore."""
        with self.model.use_params(params):
            yield

    def finish_update(self, sgd) -> None:
        self.model.finish_update(sgd)

    # ------------------------------------- rehearsal and continued training
    # The teacher (distill.Teacher) and, while continuing training without
    # forgetting, its settings (distill.ContinualSettings): training state,
    # never saved. Each component names its loss (one of distill.py's:
    # pipe, teacher, examples, logits, teacher logits, use_gold -> loss, grad).
    _teacher: Optional[distill.Teacher] = None
    _continual: Optional[distill.ContinualSettings] = None
    distillation_loss: Optional[Callable] = None

    @property
    def _rehearsal_model(self) -> Optional[Model]:
        """The model `nlp.resume_training()` copies (spaCy sets this attribute
        on every pipe that has it); kept with the labels it has outputs for."""
        return None if self._teacher is None else self._teacher.model

    @_rehearsal_model.setter
    def _rehearsal_model(self, model: Optional[Model]) -> None:
        self._teacher = distill.make_teacher(self, model)

    def rehearse(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """TrainablePipe.rehearse: learn to predict what the model copied by
        `nlp.resume_training()` predicts on the examples' docs."""
        return distill.rehearse(self, examples, drop=drop, sgd=sgd, losses=losses)

    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """TrainablePipe.update, or, while continuing training without
        forgetting, the gold where it annotates and the teacher elsewhere."""
        if self._continual is None:
            return self._update_from_gold(list(examples), drop=drop, sgd=sgd, losses=losses)
        return distill.update_without_forgetting(self, list(examples), drop=drop, sgd=sgd, losses=losses)

    def _update_from_gold(self, examples: List[Example], *, drop: float, sgd, losses: Optional[Dict[str, float]]) -> Dict[str, float]:
        """The plain update: TrainablePipe's (a component whose `get_loss`
        does not take the model's raw output overrides it)."""
        return super().update(examples, drop=drop, sgd=sgd, losses=losses)

    # --------------------------------------------------------- serialization
    def to_bytes(self, *, exclude=tuple()) -> bytes:
        self._sync_outputs()
        return super().to_bytes(exclude=exclude)

    def to_disk(self, path, *, exclude=tuple()) -> None:
        self._sync_outputs()
        super().to_disk(path, exclude=exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple(), allow_nonfinite: bool = False) -> "TorchLabelledPipe":
        """TrainablePipe.from_bytes, all or nothing (see `_load`)."""
        self._validate_serialization_attrs()
        source = f"the bytes of component '{self.name}'"
        msg = read_msgpack(bytes_data, source)
        if not isinstance(msg, dict) or not all(isinstance(v, (bytes, str)) for v in msg.values()):
            raise ModelLoadError(f"Could not load component '{self.name}' from {source}: not spaCy's serialized component")
        found = {key: msg.get(key) for key in ("cfg", "model") if key not in exclude}
        sources = {key: f"{source} ['{key}']" for key in found}
        load_vocab = None
        if "vocab" not in exclude and "vocab" in msg:
            load_vocab = lambda: self.vocab.from_bytes(msg["vocab"], exclude=exclude)
        self._load(found, sources, load_vocab, allow_nonfinite)
        return self

    def from_disk(self, path, *, exclude=tuple(), allow_nonfinite: bool = False) -> "TorchLabelledPipe":
        """TrainablePipe.from_disk, all or nothing (see `_load`)."""
        self._validate_serialization_attrs()
        found: Dict[str, Optional[bytes]] = {}
        sources: Dict[str, str] = {}
        vocab_path: List[Path] = []

        def reader(key: str) -> Callable[[Path], None]:
            def read(p: Path) -> None:
                sources[key] = f"{p} (component '{self.name}')"
                found[key] = p.read_bytes() if p.exists() else None

            return read

        readers = {"cfg": reader("cfg"), "vocab": vocab_path.append, "model": reader("model")}
        util.from_disk(path, readers, exclude)
        load_vocab = None
        if vocab_path and vocab_path[0].exists():
            load_vocab = lambda: self.vocab.from_disk(vocab_path[0], exclude=exclude)
        self._load(found, sources, load_vocab, allow_nonfinite)
        return self

    @keep_gc_state()  # spaCy's vocab loading reads msgpack too
    def _load(
        self,
        found: Dict[str, Optional[bytes]],
        sources: Dict[str, str],
        load_vocab: Optional[Callable[[], Any]],
        allow_nonfinite: bool,
    ) -> None:
        """Read and check the cfg and every tensor of the model against the
        model as the saved labels will size it, then (only then) load the
        vocab, take the cfg, resize and load the model. On error nothing of
        the component has changed."""
        for key, data in found.items():
            if data is None:
                raise ModelLoadError(f"Could not load component '{self.name}': {sources.get(key, key)} is missing")
        cfg = self._read_cfg(found["cfg"], sources["cfg"]) if "cfg" in found else {}
        labels = cfg.get("labels", self.cfg["labels"])
        n_out = self.n_outputs(len(labels)) if labels else None
        model = TrainablePipe.model.__get__(self)
        state: Optional[ModelState] = None
        if "model" in found:
            shapes = self._output_shapes(model, n_out)
            if shapes is None:
                # A custom resize_output: the expected sizes are only known after it.
                model.attrs["resize_output"](model, n_out)
                shapes = {}
            state = read_model_bytes(model, found["model"], source=sources["model"], shapes=shapes, allow_nonfinite=allow_nonfinite)
        if load_vocab is not None:
            load_vocab()
        self.cfg.update(cfg)
        if n_out is not None and "resize_output" in model.attrs:
            model.attrs["resize_output"](model, n_out)
        self._outputs_stale = False
        if state is not None:
            try:
                state.apply()
            except AttributeError:
                raise ValueError(Errors.E149) from None

    def _output_shapes(self, model: Model, n_out: Optional[int]) -> Optional[ShapeOverrides]:
        """The shapes that resizing to `n_out` outputs gives the output layers
        (as `resize_output` resizes them: a Linear's rows, an embedding's
        columns), by shim id; None for a resize function of another kind."""
        if n_out is None:
            return {}
        if model.attrs.get("resize_output") is not resize_output:
            return None
        shapes: Dict[int, Dict[str, Tuple[int, ...]]] = {}
        for node in model.walk():
            if "torch_output_layer" not in node.attrs or not any(isinstance(s, TorchShim) for s in node.shims):
                continue
            layer_name = node.attrs["torch_output_layer"]
            layer = node.shims[0].module.get_submodule(layer_name)
            if isinstance(layer, torch.nn.Linear):
                sizes = {"weight": (n_out, layer.in_features), "bias": (n_out,)}
            else:
                sizes = {"weight": (layer.num_embeddings, n_out)}
            shapes[node.shims[0].id] = {f"{layer_name}.{k}": v for k, v in sizes.items()}
        return shapes

    def _read_cfg(self, data: bytes, source: str) -> Dict[str, Any]:
        try:
            cfg = srsly.json_loads(data)
        except ValueError as err:
            raise ModelLoadError(f"Could not load component '{self.name}' from {source}: not valid JSON ({err})") from None
        problem = self._cfg_problem(cfg)
        if problem:
            raise ModelLoadError(f"Could not load component '{self.name}' from {source}: {problem}")
        return cfg

    def _cfg_problem(self, cfg: Any) -> Optional[str]:
        """What is wrong with a saved cfg, if anything: only this component's
        keys, each of the same kind as now, labels unique non-empty strings."""
        if not isinstance(cfg, dict):
            return "the cfg is not a JSON object"
        labels = cfg.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            return f"labels must be a list of non-empty strings, got {labels!r}"
        if len(set(labels)) != len(labels):
            return f"labels are repeated in {labels!r}"
        masked = cfg.get("masked_labels", [])
        if not isinstance(masked, list) or not set(masked) <= set(labels) or not all(isinstance(x, str) for x in masked):
            return f"masked_labels {masked!r} must be a list of the labels"
        if not isinstance(cfg.get("initialized", False), bool):
            return f"initialized must be true or false, got {cfg['initialized']!r}"
        # The keys both know first: a mismatch there (a multi-label pipeline
        # for an exclusive component) says more than the keys only one has.
        for key, value in cfg.items():
            if key in ("labels", "masked_labels", "initialized") or key not in self.cfg:
                continue
            current = self.cfg[key]
            if isinstance(current, bool) or isinstance(value, bool):
                if value is not current:
                    return f"{key!r} is {value!r} in the data but {current!r} for this component"
            elif isinstance(current, numbers.Real) and not isinstance(value, numbers.Real):
                return f"{key!r} must be a number, got {value!r}"
        unknown = sorted(set(cfg) - set(self.cfg) - {"initialized"})
        if unknown:
            return f"unknown cfg keys {unknown}"
        return None
