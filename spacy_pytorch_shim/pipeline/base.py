"""What the torch components share: labels in cfg, masking of labels added
after training, resizing the model to the labels (deferred, so adding many
labels costs one resize), and loading that checks everything before it
changes anything."""
import copy
import numbers
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import numpy
import srsly
from spacy import util
from spacy.errors import Errors
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.language import Language
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, set_dropout_rate
from thinc.model import deserialize_attr

from ..models import collective
from ..models.resize import resize_output, resized_output_shapes
from ..models.serialization import ModelLoadError, ModelState, keep_gc_state, read_model_bytes, read_msgpack
from . import distill

N_INIT_EXAMPLES = 10
# The model's attr that names the labels its output rows belong to, in
# order: saved with the weights, so that a cfg whose labels were reordered
# or renamed cannot attach the scores to the wrong labels.
OUTPUT_LABELS = "output_labels"


class CfgRule(NamedTuple):
    """What a cfg key allows, in words for the error, and the test of it."""

    allowed: str
    ok: Callable[[Any], bool]


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_label_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(x, str) and x for x in value)
        and len(set(value)) == len(value)
    )


def is_optional_key(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


BASE_CFG_RULES = {
    "labels": CfgRule("a list of unique non-empty strings", is_label_list),
    "masked_labels": CfgRule("a list of unique non-empty strings (labels of the component)", is_label_list),
    "initialized": CfgRule("true or false", lambda v: isinstance(v, bool)),
}


class PipeCfg(dict):
    """A component's cfg: every value set (`cfg[key] = value`, `update`,
    `setdefault`) is checked by the component's rule for the key, so that a
    bad value is an error naming the key where it is set, not a TypeError at
    the next prediction or a failure to save."""

    def __init__(self, owner: type, name: str, data: Dict[str, Any]):
        super().__init__()
        self.owner = owner
        self.name = name
        self.update(data)

    def __setitem__(self, key: str, value: Any) -> None:
        problem = self.owner.cfg_value_problem(key, value)
        if problem:
            raise ValueError(f"Component '{self.name}': {problem}")
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):
        return (PipeCfg, (self.owner, self.name, dict(self)))


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
    # Each cfg key's rule (PipeCfg); subclasses add theirs.
    cfg_rules: Dict[str, CfgRule] = BASE_CFG_RULES

    def __init__(self, vocab: Vocab, model: Model, name: str, *, scorer: Optional[Callable], **cfg):
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg = {"labels": [], "masked_labels": [], **cfg}

    @property
    def cfg(self) -> PipeCfg:
        """The cfg, in TrainablePipe's slot (which its Cython methods read)."""
        return TrainablePipe.cfg.__get__(self)

    @cfg.setter
    def cfg(self, value: Dict[str, Any]) -> None:
        TrainablePipe.cfg.__set__(self, PipeCfg(type(self), self.name, value))

    @classmethod
    def cfg_value_problem(cls, key: Any, value: Any) -> Optional[str]:
        """What is wrong with `value` for the cfg key `key`, if anything."""
        rule = cls.cfg_rules.get(key)
        if rule is None:
            return f"the cfg has no key {key!r} (its keys: {sorted(cls.cfg_rules)})"
        if not rule.ok(value):
            return f"cfg[{key!r}] must be {rule.allowed}, got {value!r}"
        return None

    @property
    def model(self) -> Model:
        """The component's model, with outputs sized to the current labels."""
        self._sync_outputs()
        return TrainablePipe.model.__get__(self)

    @model.setter
    def model(self, value: Model) -> None:
        value.attrs.setdefault(OUTPUT_LABELS, None)
        TrainablePipe.model.__set__(self, value)
        self._outputs_stale = False

    def _sync_outputs(self) -> None:
        """Do the one resize that the labels added since the last one need.
        (spaCy's Cython methods read the model without this property: every
        method that reaches them calls this first.)"""
        if self._outputs_stale:
            self._outputs_stale = False
            self._resize_model(self.n_outputs(len(self.labels)))

    def _resize_model(self, n_out: int) -> None:
        """`attrs["resize_output"]`, whose result is the model from now on
        (as spaCy assigns it: a resize function may return a new model)."""
        model = TrainablePipe.model.__get__(self)
        resized = model.attrs["resize_output"](model, n_out)
        resized.attrs[OUTPUT_LABELS] = list(self.labels)
        TrainablePipe.model.__set__(self, resized)

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
            seen = set(labels)
            ranks = collective.current()
            if ranks is not None:
                seen = ranks.labels_seen(masked, seen)
            self.cfg["masked_labels"] = [label for label in masked if label not in seen]

    def label_mask(self) -> Optional[numpy.ndarray]:
        """Boolean array over labels, True where the label is masked."""
        masked = set(self.cfg["masked_labels"])
        if not masked:
            return None
        return numpy.asarray([label in masked for label in self.labels], dtype=bool)

    # -------------------------------------------------------- initialization
    # True for a component whose `_count_example` needs every training
    # example; otherwise initialize with labels given reads only a sample.
    reads_whole_corpus = False

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None, labels: Optional[Iterable[str]] = None) -> None:
        """Labels from `labels` or from the examples, the model's outputs
        sized to them, then the model initialized on a sample; the training
        data is read once."""
        self._initialize(get_examples, labels, {})

    def _initialize(self, get_examples: Callable[[], Iterable[Example]], labels: Optional[Iterable[str]], options: Dict[str, Any]) -> None:
        """The one initialization sequence; `options` are the subclass's own
        `initialize` arguments, for `_configure`."""
        validate_get_examples(get_examples, f"{type(self).__name__}.initialize")
        sample, found, counts = self._read_examples(get_examples(), need_labels=labels is None)
        if labels is None:
            # Labels added before initialize stay, like spaCy's own components.
            labels = list(self.labels) + found
        self._set_labels(list(labels))
        self._configure(sample, counts, **options)
        # No sample (labels given, get_examples yields nothing): a one-word
        # doc, as spaCy's Language.initialize uses without examples.
        docs = [eg.predicted for eg in sample] or [Doc(self.vocab, words=["x"])]
        self.model.initialize(X=docs)
        self.cfg["initialized"] = True

    def _read_examples(self, examples: Iterable[Example], *, need_labels: bool) -> Tuple[List[Example], List[str], Dict[str, Any]]:
        """In one pass: the first N_INIT_EXAMPLES examples, the labels they
        all have (when needed) and the subclass's counts (`_count_example`)."""
        sample: List[Example] = []
        found: Dict[str, None] = {}
        counts: Dict[str, Any] = {}
        whole = need_labels or self.reads_whole_corpus
        for eg in examples:
            if len(sample) < N_INIT_EXAMPLES:
                sample.append(eg)
            elif not whole:
                break
            if need_labels:
                found.update(dict.fromkeys(self.example_labels(eg)))
            if self.reads_whole_corpus:
                self._count_example(eg, counts)
        return sample, list(found), counts

    def _set_labels(self, labels: List[str]) -> None:
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
        self._resize_model(self.n_outputs(len(self.labels)))
        self._outputs_stale = False

    def example_labels(self, example: Example) -> Iterable[str]:
        """The labels one training example has (for initialize)."""
        raise NotImplementedError

    def _count_example(self, example: Example, counts: Dict[str, Any]) -> None:
        """Add what the subclass counts over the training data (with
        `reads_whole_corpus`) to `counts`."""

    def _configure(self, sample: List[Example], counts: Dict[str, Any], **options: Any) -> None:
        """The subclass's part of initialize, once the labels are set."""

    def _no_labels(self) -> None:
        """Initialization found no labels (none given, none in the examples)."""
        raise ValueError(
            f"{Errors.E143.format(name=self.name)} (No labels were found in the "
            f"examples and none were given: pass labels= or use `spacy init labels`.)"
        )

    # ------------------------------------------------------------- spaCy API
    def use_params(self, params: Dict) -> Iterator[None]:
        """TrainablePipe.use_params (a generator, as Language drives it), on
        the resized model: resizing inside it would lose the restore."""
        with self.model.use_params(params):
            yield

    def finish_update(self, sgd) -> None:
        self.model.finish_update(sgd)

    # -------------------------------------------------------------- training
    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """TrainablePipe.update, after checking the gold and unmasking the
        labels it trains; while continuing training without forgetting, the
        gold where it annotates and the teacher elsewhere."""
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.update")
        self._validate_gold(examples)
        self._add_gold_labels(examples)
        self.unmask(self._gold_labels(examples))
        self._sync_outputs()
        distilled = any(distill.stored_targets(eg, self.name) for eg in examples)
        if self.continual is None:
            if distilled:
                return self._update_with_stored_targets(examples, drop=drop, sgd=sgd, losses=losses)
            return self._update_from_gold(examples, drop=drop, sgd=sgd, losses=losses)
        if distilled:
            raise ValueError(
                f"Component '{self.name}' continues training without forgetting and cannot also learn "
                f"stored teacher targets (spacy-pytorch-shim.DistillationCorpus.v1): use one or the other"
            )
        if self.teacher is None:
            raise ValueError(
                f"Component '{self.name}' is set to continue training without forgetting but has no "
                f"teacher: call nlp.resume_training() (spacy train does for sourced components)"
            )
        return self._update_from_teacher(examples, drop=drop, sgd=sgd, losses=losses, use_gold=True)

    def _validate_gold(self, examples: List[Example]) -> None:
        """Raise on gold annotation the component cannot learn from."""

    def _add_gold_labels(self, examples: List[Example]) -> None:
        """Add the gold's labels that the component does not know, as spaCy's
        `ner` adds their moves: being in the gold, they are unmasked and
        trained at once. Not in a data-parallel run, whose ranks must keep
        the same outputs."""
        new = [
            label
            for label in dict.fromkeys(label for eg in examples for label in self.example_labels(eg))
            if label not in self.cfg["labels"]
        ]
        if not new:
            return
        if collective.current() is not None:
            raise ValueError(
                f"Component '{self.name}': the gold has labels {new} that the component does not know, "
                f"and in a data-parallel run every rank must have the same labels: add them with "
                f"add_label before training"
            )
        for label in new:
            self.add_label(label)

    def _gold_labels(self, examples: List[Example]) -> Iterable[str]:
        """The labels the examples' gold trains (they are unmasked)."""
        raise NotImplementedError

    def _gold_loss(self, examples: List[Example], logits: Any) -> Tuple[float, Any]:
        """The gold loss of the model's output and its gradient (a doc
        without gold annotation adds nothing)."""
        return self.get_loss(examples, logits)

    def _update_with_stored_targets(self, examples: List[Example], *, drop: float, sgd, losses: Optional[Dict[str, float]]) -> Dict[str, float]:
        """One forward pass over the batch (a listener's batch stays whole):
        the gold loss, plus for the examples that carry stored teacher
        targets the distillation loss at their temperature T, times T**2
        (Hinton et al. 2015: gradients keep their scale as T changes) and
        their weight."""
        groups: Dict[Tuple[int, float, float], List[int]] = {}
        for i, eg in enumerate(examples):
            targets = distill.stored_targets(eg, self.name)
            if targets is not None:
                teacher = targets.teachers[self.name]
                groups.setdefault((id(teacher), targets.temperature, targets.weight), []).append(i)

        def loss_of(logits: Any) -> Tuple[float, Any]:
            loss, d_logits = self._gold_loss(examples, logits)
            for (_, temperature, weight), rows in groups.items():
                targets = [distill.stored_targets(examples[i], self.name) for i in rows]
                student = _rows(logits, rows)
                outputs = [t.outputs[self.name] for t in targets]
                teacher_logits = outputs if isinstance(student, list) else self.model.ops.asarray2f(numpy.stack(outputs))
                part, d_part = self.distillation_loss(
                    [examples[i] for i in rows],
                    distill.at_temperature(student, 1.0 / temperature),
                    distill.at_temperature(teacher_logits, 1.0 / temperature),
                    teacher=targets[0].teachers[self.name],
                    use_gold=False,
                )
                loss += weight * temperature**2 * part
                _add_rows(d_logits, rows, distill.at_temperature(d_part, weight * temperature))
            return loss, d_logits

        return self._step(examples, drop=drop, sgd=sgd, losses=losses, loss_of=loss_of)

    def _step(self, examples: List[Example], *, drop: float, sgd, losses: Optional[Dict[str, float]], loss_of: Callable[[Any], Tuple[float, Any]]) -> Dict[str, float]:
        """One forward and backward pass over the examples' docs with the
        loss and gradient `loss_of(model output)`; the optimizer's step if
        `sgd` is given."""
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        docs = [eg.predicted for eg in examples]
        if not any(len(doc) for doc in docs):
            return losses
        set_dropout_rate(self.model, drop)
        logits, backprop = self.model.begin_update(docs)
        loss, d_logits = loss_of(logits)
        backprop(d_logits)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def _update_from_gold(self, examples: List[Example], *, drop: float, sgd, losses: Optional[Dict[str, float]]) -> Dict[str, float]:
        """The plain update, as TrainablePipe.update."""
        return self._step(examples, drop=drop, sgd=sgd, losses=losses, loss_of=lambda logits: self._gold_loss(examples, logits))

    # ------------------------------------- rehearsal and continued training
    # The teacher (distill.Teacher) and, while continuing training without
    # forgetting, its settings (distill.ContinualSettings): training state,
    # never saved.
    teacher: Optional[distill.Teacher] = None
    continual: Optional[distill.ContinualSettings] = None

    @property
    def _rehearsal_model(self) -> Optional[Model]:
        """The model `nlp.resume_training()` copies (spaCy sets this attribute
        on every pipe that has it); kept with the labels it has outputs for."""
        return None if self.teacher is None else self.teacher.model

    @_rehearsal_model.setter
    def _rehearsal_model(self, model: Optional[Model]) -> None:
        self.teacher = None if model is None else distill.Teacher(model, self.labels, frozenset(self.cfg["masked_labels"]))

    def learn_without_forgetting(self, annotated: Iterable[str]) -> None:
        """From now on, `update` learns from the gold where the data
        annotates and holds to the teacher's predictions elsewhere
        (`annotated`: NER's labels that the data annotates completely)."""
        self.continual = distill.ContinualSettings(annotated=frozenset(annotated))

    def rehearse(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """TrainablePipe.rehearse: learn to predict what the model copied by
        `nlp.resume_training()` predicts on the examples' docs (their gold is
        not used); nothing without a teacher."""
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.rehearse")
        if self.teacher is None:
            if losses is None:
                losses = {}
            losses.setdefault(self.name, 0.0)
            return losses
        return self._update_from_teacher(examples, drop=drop, sgd=sgd, losses=losses, use_gold=False)

    def _update_from_teacher(self, examples: List[Example], *, drop: float, sgd, losses: Optional[Dict[str, float]], use_gold: bool) -> Dict[str, float]:
        def loss_of(logits: Any) -> Tuple[float, Any]:
            teacher_logits = self.teacher.model.predict([eg.predicted for eg in examples])
            return self.distillation_loss(examples, logits, teacher_logits, teacher=self.teacher, use_gold=use_gold)

        return self._step(examples, drop=drop, sgd=sgd, losses=losses, loss_of=loss_of)

    def distillation_loss(self, examples: List[Example], logits: Any, teacher_logits: Any, *, teacher: distill.Teacher, use_gold: bool) -> Tuple[float, Any]:
        """The loss against `teacher`'s outputs (and, with `use_gold`, the
        gold where it annotates) and its gradient for `logits` (distill.py)."""
        raise NotImplementedError

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
        """Read and check the cfg, the labels the saved outputs belong to, and
        every tensor of the model against the model as the saved labels will
        size it (unless it was saved before initialize), then (only then) load the
        vocab, take the cfg, resize and load the model. On error nothing of
        the component has changed."""
        for key, data in found.items():
            if data is None:
                raise ModelLoadError(f"Could not load component '{self.name}': {sources.get(key, key)} is missing")
        cfg = self._read_cfg(found["cfg"], sources["cfg"]) if "cfg" in found else {}
        merged = {**self.cfg, **cfg}
        labels = merged["labels"]
        model = TrainablePipe.model.__get__(self)
        # Saved before initialize: the outputs were never sized to the labels.
        sized = merged.get("initialized", False) and "resize_output" in model.attrs
        n_out = self.n_outputs(len(labels)) if sized else None
        state: Optional[ModelState] = None
        if "model" in found:
            state = self._check_model(model, n_out, found["model"], sources["model"], allow_nonfinite)
            saved = self._saved_output_labels(found["model"], sources["model"]) if merged.get("initialized") else None
            if saved is not None and saved != labels:
                where = sources.get("cfg", f"the cfg of component '{self.name}'")
                raise ModelLoadError(
                    f"Could not load component '{self.name}': the weights in {sources['model']} have outputs "
                    f"for the labels {saved}, in that order, but {where} has the labels {labels}"
                )
        if load_vocab is not None:
            load_vocab()
        self.cfg.update(cfg)
        for label in self.labels:
            self.vocab.strings.add(label)
        if n_out is not None:
            self._resize_model(n_out)
        self._outputs_stale = False
        if "model" in found and state is None:
            # Checked on a resized copy: now read into the resized model.
            state = read_model_bytes(TrainablePipe.model.__get__(self), found["model"], source=sources["model"], allow_nonfinite=allow_nonfinite)
        if state is not None:
            try:
                state.apply()
            except AttributeError:
                raise ValueError(Errors.E149) from None

    @staticmethod
    def _check_model(model: Model, n_out: Optional[int], data: bytes, source: str, allow_nonfinite: bool) -> Optional[ModelState]:
        """Read and check `data` against `model` as resizing it to `n_out`
        outputs will shape it, without changing `model`. With our
        `resize_output` the shapes it will give are known, and the state read
        is returned; a resize function of another kind is run on a copy of
        the model to check the data, and None is returned (the data must be
        read again into the model once it is resized)."""
        if n_out is None:
            return read_model_bytes(model, data, source=source, allow_nonfinite=allow_nonfinite)
        resize = model.attrs["resize_output"]
        if resize is resize_output:
            shapes = resized_output_shapes(model, n_out)
            return read_model_bytes(model, data, source=source, shapes=shapes, allow_nonfinite=allow_nonfinite)
        read_model_bytes(resize(copy.deepcopy(model), n_out), data, source=source, allow_nonfinite=allow_nonfinite)
        return None

    def _saved_output_labels(self, data: bytes, source: str) -> Optional[List[str]]:
        """The labels whose outputs the saved weights hold, in order (None
        for weights saved without them)."""
        attrs = read_msgpack(data, source)["attrs"][0]
        if OUTPUT_LABELS not in attrs:
            return None
        saved = deserialize_attr(None, attrs[OUTPUT_LABELS], OUTPUT_LABELS, TrainablePipe.model.__get__(self))
        if saved is not None and not is_label_list(saved):
            raise ModelLoadError(f"Could not load component '{self.name}' from {source}: attr {OUTPUT_LABELS!r} is {saved!r}, not a list of labels")
        return saved

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
        """What is wrong with a saved cfg, if anything: each key one of this
        component's with a value its rule allows, and the keys consistent."""
        if not isinstance(cfg, dict):
            return "the cfg is not a JSON object"
        # The keys both know first: a mismatch there (a multi-label pipeline
        # for an exclusive component) says more than the keys only one has.
        for key, value in cfg.items():
            if key in self.cfg_rules:
                problem = self.cfg_value_problem(key, value)
                if problem:
                    return problem
        unknown = sorted(set(cfg) - set(self.cfg_rules))
        if unknown:
            return f"unknown cfg keys {unknown}"
        return self._cfg_relations_problem({**self.cfg, **cfg})

    def _cfg_relations_problem(self, cfg: Dict[str, Any]) -> Optional[str]:
        """What is inconsistent between the keys of a whole cfg."""
        outside = [label for label in cfg["masked_labels"] if label not in cfg["labels"]]
        if outside:
            return f"cfg['masked_labels'] has {outside}, which are not among the labels {cfg['labels']}"
        return None


def _rows(outputs: Any, rows: List[int]) -> Any:
    """The outputs of the docs at `rows`: one array per doc, or one row per doc."""
    return [outputs[i] for i in rows] if isinstance(outputs, list) else outputs[rows]


def _add_rows(grads: Any, rows: List[int], part: Any) -> None:
    """Add `part`, the gradient for the docs at `rows`, into `grads` (in place)."""
    if isinstance(grads, list):
        for i, d in zip(rows, part):
            grads[i] += d
    else:
        grads[rows] += part
