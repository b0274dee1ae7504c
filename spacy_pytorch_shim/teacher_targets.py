"""Distillation from a teacher's outputs computed once (docs/distillation.md).

`spacy teacher-targets TEACHER INPUT OUTPUT` runs a trained pipeline (the
teacher) over unlabelled text and stores, per doc, its torch components'
outputs in float16 next to the tokens: a directory of `.spacy` shards (one
per input shard, so memory stays flat however large the corpus) and
`teacher.json` (the components and their labels). The reader
"spacy-pytorch-shim.DistillationCorpus.v1" mixes these docs into the gold
corpus of `spacy train`, streamed a shard at a time; a student component of
the same name learns the teacher's distributions on them (pipeline/distill.py,
at a temperature and weight set in the reader) and the gold elsewhere.
"""
import json
import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Corpus, Example

from .continual import check_corpus_settings, setting_error, spread
from .pipeline.base import TorchLabelledPipe
from .pipeline.distill import TARGETS, Teacher, TeacherTargets

READER = "spacy-pytorch-shim.DistillationCorpus.v1"
TEACHER_FILE = "teacher.json"
SHARD_PREFIX = "targets-"
FORMAT = "spacy-pytorch-shim-teacher-targets/1"
# Where a stored doc keeps its teacher outputs: {component: [shape, float16 bytes]}.
OUTPUTS = "spacy-pytorch-shim.teacher_outputs"
# Beyond this an epoch is mostly teacher-scored text; inf would make it endless.
MAX_TARGETS_RATIO = 1000


def teacher_components(nlp: Language, names: Optional[Sequence[str]] = None) -> Dict[str, TorchLabelledPipe]:
    """The torch components whose outputs are stored: `names`, or all of them."""
    torch_pipes = {name: pipe for name, pipe in nlp.components if isinstance(pipe, TorchLabelledPipe)}
    if names is None:
        if not torch_pipes:
            raise ValueError(f"the teacher has no torch component (torch_ner, torch_textcat, ...): its components are {nlp.component_names}")
        return torch_pipes
    if not names:
        raise ValueError(f"no component named to store the outputs of (the teacher's torch components: {list(torch_pipes)})")
    for name in names:
        if name not in torch_pipes:
            raise ValueError(f"'{name}' is not a torch component of the teacher (its torch components: {list(torch_pipes)})")
    return {name: torch_pipes[name] for name in names}


def teacher_description(nlp: Language, components: Dict[str, TorchLabelledPipe]) -> Dict[str, Any]:
    """What teacher.json says of each scored component: its factory and the
    labels its outputs belong to (masked ones are left out of the targets)."""
    return {
        name: {"factory": nlp.get_pipe_meta(name).factory, "labels": list(pipe.labels), "masked_labels": list(pipe.cfg["masked_labels"])}
        for name, pipe in components.items()
    }


def score_docs(nlp: Language, docs: List[Doc], components: Dict[str, TorchLabelledPipe]) -> List[Dict[str, numpy.ndarray]]:
    """Per doc (each with tokens), each scored component's model output
    (float32). The teacher's other components up to the last scored one run
    as in `nlp.pipe` (a shared tok2vec feeds its listeners); the scored ones
    only predict."""
    if not all(len(doc) for doc in docs):
        raise ValueError("score_docs: every doc needs tokens (an empty doc teaches nothing)")
    per_doc: List[Dict[str, numpy.ndarray]] = [{} for _ in docs]
    last = max(nlp.pipe_names.index(name) for name in components)
    for name, pipe in nlp.pipeline[: last + 1]:
        if name not in components:
            docs = list(pipe.pipe(docs) if hasattr(pipe, "pipe") else map(pipe, docs))
            continue
        outputs = pipe.model.predict(docs) if docs else []
        for row, scores in enumerate(per_doc):
            scores[name] = pipe.model.ops.to_numpy(outputs[row]).astype("float32")
    return per_doc


def tokens_only(doc: Doc) -> Doc:
    """A doc with `doc`'s tokens and nothing else."""
    return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def stored_doc(doc: Doc, outputs: Dict[str, numpy.ndarray]) -> Doc:
    """The doc's tokens only (the teacher's annotations are not gold) and its
    teacher outputs in float16."""
    bare = tokens_only(doc)
    bare.user_data[OUTPUTS] = {
        name: [list(array.shape), array.astype(numpy.float16).tobytes()] for name, array in outputs.items()
    }
    return bare


def shard_path(output: Path, index: int) -> Path:
    """Where `spacy teacher-targets` writes its shard `index`."""
    return output / f"{SHARD_PREFIX}{index:05d}.spacy"


def is_targets_file(path: Path) -> bool:
    """A file that `spacy teacher-targets` writes: teacher.json or a shard."""
    return path.is_file() and (path.name == TEACHER_FILE or path.name.startswith(SHARD_PREFIX) and path.suffix == ".spacy")


def write_shard(path: Path, docs: Iterable[Doc]) -> int:
    """Save stored docs as one `.spacy` file (tokens and user_data only); its size."""
    doc_bin = DocBin(attrs=[], store_user_data=True, docs=docs)
    path.write_bytes(doc_bin.to_bytes())
    return path.stat().st_size


def write_teacher_file(output: Path, teacher: str, description: Dict[str, Any], docs: int, size: int) -> None:
    """teacher.json (`description`: `teacher_description`'s), written last:
    a directory without it is an unfinished run, which the reader refuses."""
    info = {"format": FORMAT, "teacher": teacher, "components": description, "docs": docs, "bytes": size}
    (output / TEACHER_FILE).write_text(json.dumps(info, indent=1), encoding="utf8")


def read_teacher_file(path: Path) -> Dict[str, Teacher]:
    """The scored components' teachers (labels, no model) from teacher.json."""
    file = path / TEACHER_FILE
    try:
        data = json.loads(file.read_text(encoding="utf8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"not {FORMAT}")
        return {
            name: Teacher(None, tuple(info["labels"]), frozenset(info["masked_labels"]))
            for name, info in data["components"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise setting_error(READER, "targets_path", f"{path}: no readable {TEACHER_FILE} of `spacy teacher-targets` ({err})") from None


def _decode(stored: Any, teachers: Dict[str, Teacher], source: str) -> Dict[str, numpy.ndarray]:
    outputs = {}
    for name, teacher in teachers.items():
        try:
            shape, data = stored[name]
            outputs[name] = numpy.frombuffer(data, dtype=numpy.float16).reshape(shape).astype("float32")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: a doc's stored outputs of '{name}' are missing or damaged ({err})") from None
    return outputs


def distillation_corpus_v1(
    path: Path,
    targets_path: Path,
    *,
    targets_ratio: float = 1.0,
    temperature: float = 1.0,
    weight: float = 1.0,
    max_length: int = 0,
    limit: int = 0,
) -> Callable[[Language], Iterator[Example]]:
    """"spacy-pytorch-shim.DistillationCorpus.v1": the gold examples of `path`
    with `targets_ratio` teacher-scored docs of `targets_path` (written by
    `spacy teacher-targets`) per gold one, spread evenly. The scored docs are
    read a shard at a time, shuffled within it, and continue across epochs
    where the previous one stopped. On them a student component learns the
    outputs of the teacher's component of the same name at `temperature`,
    its loss times `weight`; they carry no gold."""
    if not 0 <= targets_ratio <= MAX_TARGETS_RATIO:  # False for NaN
        raise setting_error(READER, "targets_ratio", f"{targets_ratio}: must be a number from 0 to {MAX_TARGETS_RATIO} (scored docs per gold one)")
    if not 0 < temperature < float("inf"):
        raise setting_error(READER, "temperature", f"{temperature}: must be a number > 0")
    if not 0 <= weight < float("inf"):
        raise setting_error(READER, "weight", f"{weight}: must be a number >= 0")
    check_corpus_settings(READER, {"path": path}, max_length=max_length, limit=limit)
    targets_path = Path(targets_path)
    teachers = read_teacher_file(targets_path)
    shards = sorted(targets_path.glob("*.spacy"))
    if not shards:
        raise setting_error(READER, "targets_path", f"{targets_path}: has no .spacy shards")
    gold = Corpus(path, max_length=max_length, limit=limit)
    streams: Dict[int, Iterator[Example]] = {}

    def scored(nlp: Language) -> Iterator[Example]:
        while True:
            n = 0
            for shard in random.sample(shards, len(shards)):
                docs = list(DocBin().from_disk(shard).get_docs(nlp.vocab))
                random.shuffle(docs)
                for doc in docs:
                    if not len(doc) or (max_length and len(doc) > max_length):
                        continue
                    outputs = _decode(doc.user_data.pop(OUTPUTS, None), teachers, str(shard))
                    doc.user_data[TARGETS] = TeacherTargets(outputs, teachers, temperature, weight)
                    n += 1
                    yield Example(tokens_only(doc), doc)
            if n == 0:
                raise setting_error(READER, "targets_path", f"{targets_path}: its shards hold no docs")

    def examples(nlp: Language) -> Iterator[Example]:
        return spread(gold(nlp), streams.setdefault(id(nlp), scored(nlp)), targets_ratio)

    return examples


__all__ = [
    "distillation_corpus_v1", "read_teacher_file", "score_docs", "stored_doc", "teacher_components", "teacher_description",
    "write_shard", "write_teacher_file",
]
