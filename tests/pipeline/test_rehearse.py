"""`rehearse` (spaCy's `nlp.rehearse` after `nlp.resume_training`) and the
gold-plus-teacher losses of continued training (pipeline/distill.py), on
every torch component, in-process with tiny models."""
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.continual import learn_without_forgetting_v1

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLES = {
    "torch_ner": "btc-sample",
    "torch_textcat": "banking77-sample",
    "torch_textcat_multilabel": "goemotions-sample",
}
TINY_TOK2VEC = {"width": 16, "encoder": {"width": 16, "depth": 1}}
TINY_MODELS = {
    "torch_ner": {"model": {"hidden_width": 16, "tok2vec": TINY_TOK2VEC}},
    # The text classifiers' default models have no tok2vec: one is added.
    "torch_textcat": {"model": {"hidden_width": 16, "ngram_rows": 4096, "tok2vec": {
        "@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1", **TINY_TOK2VEC,
        "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", **TINY_TOK2VEC["encoder"]},
    }}},
}
TINY_MODELS["torch_textcat_multilabel"] = TINY_MODELS["torch_textcat"]


def _trained(factory: str, n_docs: int = 24, steps: int = 3):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory, config=TINY_MODELS[factory])
    docs = list(DocBin().from_disk(DATA / SAMPLES[factory] / "train.spacy").get_docs(nlp.vocab))[:n_docs]
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, drop=0.0)
    return nlp, pipe, examples


def _outputs(pipe, docs):
    """The probabilities over the component's first `n` labels' outputs."""
    scores = pipe.model.predict(docs)
    if pipe.name == "torch_ner":
        return numpy.concatenate([numpy.exp(pipe._log_probs(pipe.model.ops.to_numpy(s))) for s in scores])
    return pipe.model.ops.to_numpy(pipe.predict(docs))


@pytest.mark.parametrize("factory", list(SAMPLES))
def test_rehearse_without_teacher_changes_nothing(factory):
    nlp, pipe, examples = _trained(factory, n_docs=8, steps=1)
    before = pipe.model.to_bytes()
    losses = pipe.rehearse(examples, sgd=nlp.create_optimizer())
    assert losses == {factory: 0.0}
    assert pipe.model.to_bytes() == before


@pytest.mark.parametrize("factory", list(SAMPLES))
def test_nlp_rehearse_pulls_the_component_back_to_the_teacher(factory):
    """After resume_training, updates on other targets move the component away
    from the teacher; nlp.rehearse on raw text brings it back; the teacher's
    weights never change."""
    nlp, pipe, examples = _trained(factory)
    docs = [eg.predicted for eg in examples]
    nlp.resume_training()
    teacher_bytes = pipe._rehearsal_model.to_bytes()
    assert pipe.teacher.labels == pipe.labels
    teacher = _outputs(pipe, docs)
    # Away from the teacher: every token one entity / every doc one class.
    if factory == "torch_ner":
        wrong = [Example.from_dict(nlp.make_doc(d.text), {"entities": [f"U-{pipe.labels[0]}"] * len(d)}) for d in docs]
    else:
        wrong = [Example.from_dict(nlp.make_doc(d.text), {"cats": {label: float(i == 0) for i, label in enumerate(pipe.labels)}}) for d in docs]
    for _ in range(4):
        nlp.update(wrong, sgd=Adam(0.01))
    drifted = numpy.abs(_outputs(pipe, docs) - teacher).mean()
    raw = [Example.from_dict(nlp.make_doc(d.text), {}) for d in docs]
    optimizer = Adam(0.005)
    for _ in range(8):
        losses = nlp.rehearse(raw, sgd=optimizer)
    assert losses[factory] > 0
    rehearsed = numpy.abs(_outputs(pipe, docs) - teacher).mean()
    assert rehearsed < 0.6 * drifted, (drifted, rehearsed)
    assert pipe._rehearsal_model.to_bytes() == teacher_bytes


@pytest.mark.parametrize("factory", list(SAMPLES))
def test_rehearse_after_adding_a_label(factory):
    """The teacher has fewer outputs than the component: rehearse holds the
    teacher's labels and leaves the new one to the gold."""
    nlp, pipe, examples = _trained(factory, n_docs=8, steps=1)
    optimizer = nlp.resume_training()
    pipe.add_label("NEWLABEL")
    raw = [Example.from_dict(eg.predicted, {}) for eg in examples]
    losses = nlp.rehearse(raw, sgd=optimizer)
    assert losses[factory] > 0
    assert pipe.teacher.labels == pipe.labels[:-1]


def _ner_with_teacher(annotated):
    """A torch_ner with labels PER, LOC whose teacher is its own copy, ORG
    added, in continued training with `annotated` labels."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("torch_ner", config=TINY_MODELS["torch_ner"])
    pipe.initialize(lambda: [Example.from_dict(nlp.make_doc("x"), {})], nlp=nlp, labels=["PER", "LOC"])
    pipe.unmask(["PER", "LOC"])  # as updates on PER and LOC entities leave a trained component
    nlp.resume_training()
    learn_without_forgetting_v1(new_labels={"torch_ner": ["ORG"]}, **({"annotated_labels": {"torch_ner": annotated}} if annotated is not None else {}))(nlp)
    return nlp, pipe


@pytest.mark.parametrize("annotated", [None, ["ORG", "PER", "LOC"]])
def test_ner_missing_versus_negative(annotated):
    """The new data annotates ORG only ("Alice visits Acme"): token 0 is "O"
    there. Missing (the default): the teacher's U-PER there is the target;
    negative (PER listed as annotated): "O" is."""
    nlp, pipe = _ner_with_teacher(annotated)
    doc = nlp.make_doc("Alice visits Acme")
    example = Example.from_dict(doc, {"entities": [(13, 17, "ORG")]})
    tags = pipe.tags
    teacher_logits = numpy.zeros((3, len(tags) - 4), dtype="f")
    teacher_logits[0, tags.index("U-PER")] = 8.0
    teacher_logits[1:, 0] = 8.0
    student_logits = numpy.zeros((3, len(tags)), dtype="f")
    loss, (d,) = pipe.distillation_loss([example], [student_logits], [teacher_logits], teacher=pipe.teacher, use_gold=True)
    u_per, o = tags.index("U-PER"), tags.index("O")
    if annotated is None:
        assert d[0, u_per] < 0 and d[0, o] > 0  # towards the teacher's PER
    else:
        assert d[0, u_per] > 0 and d[0, o] < 0  # towards gold "O"
    # ORG is masked until an update sees it in the gold: left out until then.
    assert numpy.all(d[:, -4:] == 0.0)
    pipe.unmask(["ORG"])
    _, (d,) = pipe.distillation_loss([example], [student_logits], [teacher_logits], teacher=pipe.teacher, use_gold=True)
    # Token 2 is gold U-ORG either way; ORG is ruled out at tokens 0 and 1.
    assert d[2, tags.index("U-ORG")] < 0
    assert d[1, tags.index("U-ORG")] > 0


def test_ner_rehearse_leaves_new_label_free():
    nlp, pipe = _ner_with_teacher(None)
    doc = nlp.make_doc("Alice visits Acme")
    teacher_logits = numpy.random.RandomState(0).normal(size=(3, len(pipe.tags) - 4)).astype("f")
    student_logits = numpy.zeros((3, len(pipe.tags)), dtype="f")
    _, (d,) = pipe.distillation_loss([Example(doc, doc)], [student_logits], [teacher_logits], teacher=pipe.teacher, use_gold=False)
    assert numpy.all(d[:, -4:] == 0.0)  # the ORG columns
    assert numpy.abs(d[:, :-4]).sum() > 0


def _textcat_with_teacher(factory):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory, config=TINY_MODELS[factory])
    pipe.initialize(lambda: [Example.from_dict(nlp.make_doc("x"), {})], nlp=nlp, labels=["A", "B", "C"])
    nlp.resume_training()
    learn_without_forgetting_v1(new_labels={factory: ["NEW"]})(nlp)
    teacher_logits = numpy.asarray([[3.0, 0.0, -3.0]] * 2, dtype="f")
    student_logits = numpy.zeros((2, 4), dtype="f")
    return nlp, pipe, teacher_logits, student_logits


def test_multilabel_missing_versus_negative():
    """A label absent from doc.cats is missing (the teacher's probability is
    the target); a label given as 0 is negative."""
    nlp, pipe, teacher_logits, student_logits = _textcat_with_teacher("torch_textcat_multilabel")
    pipe.unmask(["NEW"])
    missing = Example.from_dict(nlp.make_doc("one"), {"cats": {"NEW": 1.0}})
    negative = Example.from_dict(nlp.make_doc("two"), {"cats": {"NEW": 1.0, "A": 0.0}})
    _, d = pipe.distillation_loss([missing, negative], student_logits, teacher_logits, teacher=pipe.teacher, use_gold=True)
    assert d[0, 0] < 0  # teacher's A (0.95) pulls it up
    assert d[1, 0] > 0  # gold A = 0 pushes it down
    assert d[0, 3] < 0 and d[1, 3] < 0  # NEW learned from the gold


def test_exclusive_positive_new_label_keeps_teacher_ranking():
    """Exclusive classes: a doc of the new class makes the old ones negative,
    and the teacher's distribution over the old classes is kept as well."""
    nlp, pipe, teacher_logits, student_logits = _textcat_with_teacher("torch_textcat")
    pipe.unmask(["NEW"])
    example = Example.from_dict(nlp.make_doc("one"), {"cats": {"NEW": 1.0}})
    _, d = pipe.distillation_loss([example], student_logits[:1], teacher_logits[:1], teacher=pipe.teacher, use_gold=True)
    assert d[0, 3] < 0  # NEW up
    assert d[0, 2] > d[0, 0]  # C (teacher's least) pushed down more than A (teacher's top)
    gold_only = Example.from_dict(nlp.make_doc("two"), {"cats": {}})
    _, d = pipe.distillation_loss([gold_only], student_logits[:1], teacher_logits[:1], teacher=pipe.teacher, use_gold=True)
    assert d[0, 3] == 0.0 and d[0, 0] < 0  # no annotation: the teacher fills in, NEW left free


def test_callback_errors_name_the_problem():
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_textcat", config=TINY_MODELS["torch_textcat"]).initialize(lambda: [Example.from_dict(nlp.make_doc("x"), {})], nlp=nlp, labels=["A", "B"])
    with pytest.raises(ValueError, match="no torch component has a teacher"):
        learn_without_forgetting_v1()(nlp)
    with pytest.raises(ValueError, match=r"new_labels\s+names 'ner'"):
        learn_without_forgetting_v1(new_labels={"ner": ["ORG"]})(nlp)
    nlp.resume_training()
    with pytest.raises(ValueError, match=r"annotated_labels\s+names 'torch_textcat', a text classifier"):
        learn_without_forgetting_v1(annotated_labels={"torch_textcat": ["A"]})(nlp)
