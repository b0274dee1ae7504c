"""Continue training a trained pipeline on new data without forgetting, from
the config of `spacy train` (docs/continual-learning.md).

The trained components are sourced (`[components.ner] source = ...`), so
`spacy train` calls `nlp.resume_training()`, which keeps a frozen copy of
each one: the teacher. The `[initialize.after_init]` callback
"spacy-pytorch-shim.learn_without_forgetting.v1" adds the new labels and
switches the torch components' updates to gold-plus-teacher targets
(pipeline/distill.py). The reader "spacy-pytorch-shim.RehearsalCorpus.v1"
mixes examples of the old data into the new at a set ratio.
"""
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List

from confection import ConfigValidationError
from spacy.language import Language
from spacy.training import Corpus, Example

from .pipeline.base import TorchLabelledPipe
from .pipeline.ner import TorchEntityRecognizer


def learn_without_forgetting_v1(
    *,
    new_labels: Dict[str, List[str]] = {},
    annotated_labels: Dict[str, List[str]] = {},
) -> Callable[[Language], Language]:
    """"spacy-pytorch-shim.learn_without_forgetting.v1", an `after_init`
    callback. Every sourced torch component (one with a teacher) then learns
    from the gold where the new data annotates and holds to its teacher's
    predictions elsewhere.

    new_labels: labels to add, by component name (learned from the new data).
    annotated_labels: NER only, by component name: the labels the new data's
        entities annotate completely, where a token outside an entity is "not
        this label" (negative); default the labels the teacher does not have.
        The teacher fills in every other label (missing). Textcat reads which
        labels a doc annotates from its `doc.cats` keys.
    """

    for setting, value in (("new_labels", new_labels), ("annotated_labels", annotated_labels)):
        for name, labels in value.items():
            if not all(isinstance(label, str) and label.strip() for label in labels):
                raise setting_error(CALLBACK, setting, f"{name!r}: {labels!r}: labels must be non-empty strings")

    def after_init(nlp: Language) -> Language:
        # The sourced torch components: those with a teacher.
        students = {
            name: pipe
            for name, pipe in nlp.components
            if isinstance(pipe, TorchLabelledPipe) and pipe.teacher is not None
        }
        for setting, value in (("new_labels", new_labels), ("annotated_labels", annotated_labels)):
            for name in value:
                if name not in students:
                    raise setting_error(
                        CALLBACK, setting,
                        f"names '{name}', which is not a torch component sourced from a trained "
                        f"pipeline (components with a teacher: {list(students)})",
                    )
        for name in annotated_labels:
            if not isinstance(students[name], TorchEntityRecognizer):
                raise setting_error(
                    CALLBACK, "annotated_labels",
                    f"names '{name}', a text classifier: which labels a doc annotates is which keys its doc.cats has",
                )
        if not students:
            raise setting_error(
                CALLBACK, "after_init",
                "no torch component has a teacher. Source the trained components "
                "(`source = \"path/to/pipeline\"` in [components.NAME]) and leave them out of "
                "[training] frozen_components",
            )
        for name, pipe in students.items():
            for label in new_labels.get(name, []):
                pipe.add_label(label)
            teacher_labels = set(pipe.teacher.known)
            annotated = annotated_labels.get(name, [label for label in pipe.labels if label not in teacher_labels])
            unknown = [label for label in annotated if label not in pipe.labels]
            if unknown:
                raise setting_error(
                    CALLBACK, "annotated_labels",
                    f"'{name}': {unknown} are not labels of the component {list(pipe.labels)} (add them in new_labels)",
                )
            pipe.learn_without_forgetting(annotated)
        return nlp

    return after_init


CALLBACK = "spacy-pytorch-shim.learn_without_forgetting.v1"
READER = "spacy-pytorch-shim.RehearsalCorpus.v1"
# Beyond this an epoch is mostly old data; inf would make it endless.
MAX_REHEARSAL_RATIO = 100


def rehearsal_corpus_v1(
    path: Path,
    rehearsal_path: Path,
    *,
    rehearsal_ratio: float = 0.5,
    rehearsal_gold: bool = False,
    max_length: int = 0,
    limit: int = 0,
) -> Callable[[Language], Iterator[Example]]:
    """"spacy-pytorch-shim.RehearsalCorpus.v1": the examples of `path` (the new
    data) with `rehearsal_ratio` examples of `rehearsal_path` (the old data)
    per new one, spread evenly, the old ones shuffled and cycled across epochs. With `rehearsal_gold =
    false` the old examples are text only (spaCy's rehearsal: the teacher's
    predictions are their targets); with true they keep their gold, read as
    the new data's gold is (docs/continual-learning.md)."""
    if not 0 <= rehearsal_ratio <= MAX_REHEARSAL_RATIO:  # False for NaN
        raise setting_error(
            READER, "rehearsal_ratio", f"{rehearsal_ratio}: must be a number from 0 to {MAX_REHEARSAL_RATIO} (old examples per new one)"
        )
    check_corpus_settings(READER, {"path": path, "rehearsal_path": rehearsal_path}, max_length=max_length, limit=limit)
    new = Corpus(path, max_length=max_length, limit=limit)
    old = Corpus(rehearsal_path, max_length=max_length, shuffle=True)
    # One cycle over the old data for all epochs: each epoch rehearses the
    # next old examples, not the same first ones.
    cycles: Dict[int, Iterator[Example]] = {}

    def examples(nlp: Language) -> Iterator[Example]:
        old_examples = cycles.setdefault(id(nlp), _cycle(lambda: old(nlp), rehearsal_path))
        if not rehearsal_gold:
            old_examples = (Example.from_dict(eg.predicted, {}) for eg in old_examples)
        return spread(new(nlp), old_examples, rehearsal_ratio)

    return examples


def check_corpus_settings(reader: str, paths: Dict[str, Path], *, max_length: int, limit: int) -> None:
    """A corpus reader's limits and its paths to `.spacy` data, as config
    errors naming the setting."""
    for key, value in (("max_length", max_length), ("limit", limit)):
        if value < 0:
            raise setting_error(reader, key, f"{value}: must be an integer >= 0 (0: no limit)")
    for key, value in paths.items():
        value = Path(value)
        if not (value.suffix == ".spacy" and value.is_file() or value.is_dir() and any(value.rglob("*.spacy"))):
            raise setting_error(reader, key, f"{value}: {'' if value.exists() else 'not found; '}must be a .spacy file or a directory with .spacy files")


def spread(examples: Iterable[Example], extra: Iterator[Example], ratio: float) -> Iterator[Example]:
    """`examples` with `ratio` examples of `extra` after each, spread evenly
    (a ratio of 0.5: one after every second)."""
    owed = 0.0
    for eg in examples:
        yield eg
        owed += ratio
        while owed >= 1.0:
            owed -= 1.0
            yield next(extra)


def _cycle(make: Callable[[], Iterator[Example]], path: Path) -> Iterator[Example]:
    while True:
        n = 0
        for eg in make():
            n += 1
            yield eg
        if n == 0:
            raise setting_error(READER, "rehearsal_path", f"{path}: has no examples (a .spacy file or a directory of them)")


def setting_error(where: str, key: str, message: str) -> ConfigValidationError:
    """A setting given wrongly, as a config error: spaCy's CLI prints it as
    `where`, then one line `key  message` (the value and what is allowed),
    without a traceback."""
    return ConfigValidationError(title=f"Config validation error: {where}", errors=[{"loc": [key], "msg": message}])


__all__ = ["learn_without_forgetting_v1", "rehearsal_corpus_v1"]
