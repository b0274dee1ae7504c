"""Distillation from stored teacher outputs (teacher_targets.py): the stored
float16 outputs are the teacher's, a student learns them through
DistillationCorpus.v1 on every torch component, the loss at a temperature
is Hinton's (gradient T * (softmax(z/T) - softmax(t/T)) times the weight),
gold and teacher-scored docs share one forward pass, and bad settings are
one-line config errors."""
import math
from pathlib import Path

import numpy
import pytest
import spacy
from confection import ConfigValidationError
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.pipeline.distill import TARGETS
from spacy_pytorch_shim.teacher_targets import (
    distillation_corpus_v1, score_docs, shard_path, stored_doc, teacher_components, teacher_description, write_shard,
    write_teacher_file,
)

from pipeline.test_rehearse import DATA, SAMPLES, TINY_MODELS


def make_pipe(factory: str, seed: int, n_docs: int = 24, steps: int = 0):
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory, config=TINY_MODELS[factory])
    docs = list(DocBin().from_disk(DATA / SAMPLES[factory] / "train.spacy").get_docs(nlp.vocab))
    gold = [Example(nlp.make_doc(doc.text), doc) for doc in docs[:n_docs]]
    nlp.initialize(lambda: gold)
    optimizer = Adam(0.01)
    for _ in range(steps):
        nlp.update(gold, sgd=optimizer, drop=0.0)
    return nlp, pipe, gold


def unlabelled(factory: str, n: int = 40):
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(DATA / SAMPLES[factory] / "dev.spacy").get_docs(nlp.vocab))[:n]
    return [doc.text for doc in docs]


def store(teacher_nlp, texts, out: Path, shard_size: int = 16) -> Path:
    """What `spacy teacher-targets` writes, in process."""
    out.mkdir()
    components = teacher_components(teacher_nlp)
    docs = [teacher_nlp.make_doc(text) for text in texts]
    size = 0
    for index, start in enumerate(range(0, len(docs), shard_size)):
        batch = docs[start : start + shard_size]
        stored = [stored_doc(doc, outputs) for doc, outputs in zip(batch, score_docs(teacher_nlp, batch, components))]
        size += write_shard(shard_path(out, index), stored)
    write_teacher_file(out, "teacher", teacher_description(teacher_nlp, components), len(docs), size)
    return out


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Per factory, a teacher trained for 8 steps, 24 unlabelled texts, their
    stored targets (shards of 8 docs) and a gold file of 4 docs: made once."""
    made = {}

    def get(factory: str):
        if factory not in made:
            root = tmp_path_factory.mktemp(factory)
            teacher_nlp, teacher, gold = make_pipe(factory, seed=1, steps=8)
            texts = unlabelled(factory, 24)
            targets = store(teacher_nlp, texts, root / "targets", shard_size=8)
            made[factory] = (teacher_nlp, teacher, texts, targets, gold_file(gold[:4], root / "gold.spacy"))
        return made[factory]

    return get


def gold_file(gold, path: Path) -> Path:
    DocBin(docs=[eg.reference for eg in gold]).to_disk(path)
    return path


def divergence(student, teacher, docs) -> float:
    """Mean KL divergence of the student's distributions from the teacher's
    (per token over the tags for NER, per doc over the labels, per doc and
    label for multi-label)."""
    if student.name == "torch_ner":
        p = numpy.exp(numpy.concatenate(teacher.predict(docs)))
        q = numpy.exp(numpy.concatenate(student.predict(docs)))
    elif student.name == "torch_textcat":
        p, q = teacher.predict(docs), student.predict(docs)
    else:
        p, q = teacher.predict(docs), student.predict(docs)
        p, q = numpy.stack([p, 1 - p], -1), numpy.stack([q, 1 - q], -1)
    return float((p * (numpy.log(p + 1e-8) - numpy.log(q + 1e-8))).sum(-1).mean())


def test_stored_outputs_are_the_teachers_in_float16(teachers):
    teacher_nlp, teacher, texts, targets, _ = teachers("torch_ner")
    assert len(list(targets.glob("*.spacy"))) == 3
    stored = [doc for shard in sorted(targets.glob("*.spacy")) for doc in DocBin().from_disk(shard).get_docs(teacher_nlp.vocab)]
    expected = teacher.model.predict([teacher_nlp.make_doc(text) for text in texts])
    assert [doc.text for doc in stored] == texts
    for doc, want in zip(stored, expected):
        assert not doc.ents  # tokens only: the teacher's annotation is not gold
        shape, data = doc.user_data["spacy-pytorch-shim.teacher_outputs"]["torch_ner"]
        got = numpy.frombuffer(data, dtype=numpy.float16).reshape(shape)
        numpy.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("factory", list(SAMPLES))
def test_a_student_learns_the_teachers_outputs_from_the_corpus(factory, teachers):
    teacher_nlp, teacher, texts, targets, gold = teachers(factory)
    student_nlp, student, _ = make_pipe(factory, seed=2)
    corpus = distillation_corpus_v1(gold, targets, targets_ratio=6)
    scored_docs = [student_nlp.make_doc(text) for text in texts]
    before = divergence(student, teacher, scored_docs)
    optimizer = Adam(0.01)
    for _ in range(8):
        examples = list(corpus(student_nlp))
        assert sum(TARGETS in eg.reference.user_data for eg in examples) == 24
        losses = student_nlp.update(examples, sgd=optimizer, drop=0.0)
        assert losses[factory] > 0
    after = divergence(student, teacher, scored_docs)
    assert after < 0.5 * before, (before, after)


def capture_gradients(pipe, monkeypatch):
    """The model's output and the gradient that the update sends back to it."""
    seen = {}
    model_class = type(pipe.model)
    begin_update = model_class.begin_update

    def spy(model, docs):
        logits, backprop = begin_update(model, docs)
        if model is not pipe.model:
            return logits, backprop
        seen["logits"] = logits

        def capture(d_logits):
            seen["d_logits"] = d_logits.copy()
            return backprop(d_logits)

        return logits, capture

    monkeypatch.setattr(model_class, "begin_update", spy)
    return seen


def softmax(x):
    e = numpy.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_and_weight_scale_hintons_gradient_and_gold_shares_the_pass(teachers, monkeypatch):
    _, _, _, targets, gold = teachers("torch_textcat")
    student_nlp, student, _ = make_pipe("torch_textcat", seed=2)
    temperature, weight = 3.0, 0.5
    corpus = distillation_corpus_v1(gold, targets, targets_ratio=2, temperature=temperature, weight=weight)
    examples = list(corpus(student_nlp))
    scored = [i for i, eg in enumerate(examples) if TARGETS in eg.reference.user_data]
    golden = [i for i in range(len(examples)) if i not in scored]
    assert len(scored) == 8 and len(golden) == 4
    seen = capture_gradients(student, monkeypatch)
    student.update(examples, drop=0.0)
    z = student.model.ops.to_numpy(seen["logits"])
    d = student.model.ops.to_numpy(seen["d_logits"])
    t = numpy.stack([examples[i].reference.user_data[TARGETS].outputs["torch_textcat"] for i in scored])
    expected = weight * temperature * (softmax(z[scored] / temperature) - softmax(t / temperature)) / len(scored)
    numpy.testing.assert_allclose(d[scored], expected, rtol=1e-4, atol=1e-6)
    # The gold rows get exactly the gold loss's gradient, in the same pass.
    _, gold_d = student.get_loss([examples[i] for i in golden], student._activate(seen["logits"][golden]))
    numpy.testing.assert_allclose(d[golden], student.model.ops.to_numpy(gold_d) * len(golden) / len(examples), rtol=1e-5, atol=1e-7)


def test_the_scored_docs_continue_across_epochs(teachers):
    _, _, texts, targets, gold = teachers("torch_textcat")
    corpus = distillation_corpus_v1(gold, targets, targets_ratio=3)
    nlp = spacy.blank("en")
    seen = []
    for _ in range(2):
        examples = list(corpus(nlp))
        assert len(examples) == 4 + 12
        seen += [eg.reference.text for eg in examples if TARGETS in eg.reference.user_data]
    assert sorted(seen) == sorted(texts)  # 24 scored docs, each once over two epochs


def test_continued_training_and_stored_targets_are_one_or_the_other(teachers):
    _, _, _, targets, gold = teachers("torch_textcat")
    nlp, pipe, _ = make_pipe("torch_textcat", seed=2)
    nlp.resume_training()
    pipe.learn_without_forgetting([])
    examples = list(distillation_corpus_v1(gold, targets)(nlp))
    with pytest.raises(ValueError, match="cannot also learn stored teacher targets"):
        pipe.update(examples)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("targets_ratio", -1, "must be a number from 0 to 1000"),
        ("targets_ratio", math.nan, "must be a number from 0 to 1000"),
        ("temperature", 0, "must be a number > 0"),
        ("temperature", math.inf, "must be a number > 0"),
        ("weight", -0.5, "must be a number >= 0"),
    ],
)
def test_reader_settings_are_config_errors(setting, value, message, tmp_path):
    with pytest.raises(ConfigValidationError) as err:
        distillation_corpus_v1(tmp_path, tmp_path, **{setting: value})
    assert setting in str(err.value) and message in str(err.value)


def test_a_directory_without_teacher_json_is_refused(teachers, tmp_path):
    gold = teachers("torch_textcat")[4]
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ConfigValidationError) as err:
        distillation_corpus_v1(gold, tmp_path / "unfinished")
    assert "no readable teacher.json" in str(err.value)


def test_the_components_to_score_are_checked(teachers):
    teacher_nlp = teachers("torch_textcat")[0]
    assert list(teacher_components(teacher_nlp)) == ["torch_textcat"]
    with pytest.raises(ValueError, match=r"no component named to store the outputs of \(the teacher's torch components: \['torch_textcat'\]\)"):
        teacher_components(teacher_nlp, [])
    with pytest.raises(ValueError, match="'textcat' is not a torch component of the teacher"):
        teacher_components(teacher_nlp, ["textcat"])
