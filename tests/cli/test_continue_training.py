"""Continued training without forgetting in a real `spacy train`
(docs/continual-learning.md): a torch_ner trained on PER and LOC, then
sourced and trained on ORG-only data with the learn_without_forgetting
callback and old text mixed in by RehearsalCorpus. The old labels' entities
on the first training's docs stay close to the teacher's (plain fine-tuning
on the same data loses them all), ORG is learned, the teacher's files are
untouched and the continued pipeline saves and loads."""
import hashlib
import random
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_config
from thinc.api import fix_random_seed


OLD, NEW = {"PER", "LOC"}, {"ORG"}
PHASE1_STEPS, PHASE2_STEPS = 250, 150


def _keep(docs, labels):
    out = []
    for doc in docs:
        doc = doc.copy()
        doc.ents = [ent for ent in doc.ents if ent.label_ in labels]
        out.append(doc)
    return out


def continuation_config(cli, path: Path) -> Path:
    """configs/ner.cfg with the sections docs/continual-learning.md changes."""
    config = load_config(cli.CONFIGS / "ner.cfg")
    config["paths"]["source"] = None
    config["paths"]["old"] = None
    config["components"]["torch_ner"] = {"source": "${paths.source}"}
    config["corpora"]["train"] = {
        "@readers": "spacy-pytorch-shim.RehearsalCorpus.v1",
        "path": "${paths.train}",
        "rehearsal_path": "${paths.old}",
        "rehearsal_ratio": 0.5,
    }
    config["initialize"]["after_init"] = {
        "@callbacks": "spacy-pytorch-shim.learn_without_forgetting.v1",
        "new_labels": {"torch_ner": ["ORG"]},
    }
    config.to_disk(path)
    return path


def _hashes(directory: Path):
    return {p.relative_to(directory): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def continued(cli, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("continue")
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(cli.DATA / "btc-sample" / "train.spacy").get_docs(nlp.vocab))
    has = lambda doc, labels: any(ent.label_ in labels for ent in doc.ents)
    # Docs with entities, so that 100 docs teach something in a few steps.
    paths = {
        "old": _keep([d for d in docs[:750] if has(d, OLD)][:100], OLD),
        "new": _keep([d for d in docs[750:] if has(d, NEW)][:100], NEW),
        "rehearse": docs[750:850],
        "dev": docs[1400:1440],
    }
    for name, split in paths.items():
        DocBin(docs=split).to_disk(tmp / f"{name}.spacy")
    teacher = tmp / "teacher"
    cli.run(["train", cli.CONFIGS / "ner.cfg", "--output", teacher, "--paths.train", tmp / "old.spacy",
             "--paths.dev", tmp / "old.spacy", "--training.max_steps", PHASE1_STEPS,
             "--training.eval_frequency", PHASE1_STEPS, "--training.optimizer.learn_rate", 0.005])
    before = _hashes(teacher / "model-last")
    student = tmp / "student"
    cli.run(["train", continuation_config(cli, tmp / "continue.cfg"), "--output", student,
             "--paths.source", teacher / "model-last", "--paths.train", tmp / "new.spacy",
             "--paths.old", tmp / "rehearse.spacy", "--paths.dev", tmp / "dev.spacy",
             "--training.max_steps", PHASE2_STEPS, "--training.eval_frequency", PHASE2_STEPS])
    return {"tmp": tmp, "teacher": teacher / "model-last", "student": student / "model-last",
            "teacher_hashes": before}


def _ents(nlp, docs, labels):
    return {(i, ent.start, ent.end, ent.label_) for i, doc in enumerate(nlp.pipe(d.text for d in docs))
            for ent in doc.ents if ent.label_ in labels}


def test_old_labels_kept_new_label_learned(continued):
    teacher = spacy.load(continued["teacher"])
    student = spacy.load(continued["student"])
    assert student.get_pipe("torch_ner").labels == ("LOC", "PER", "ORG")
    held = list(DocBin().from_disk(continued["tmp"] / "old.spacy").get_docs(teacher.vocab))
    taught = _ents(teacher, held, OLD)
    kept = _ents(student, held, OLD)
    assert len(taught) > 100
    agreement = 2 * len(taught & kept) / (len(taught) + len(kept))
    assert agreement > 0.5, (len(taught), len(kept), len(taught & kept))
    new = list(DocBin().from_disk(continued["tmp"] / "new.spacy").get_docs(teacher.vocab))
    gold = {(i, e.start, e.end, e.label_) for i, doc in enumerate(new) for e in doc.ents}
    found = _ents(student, new, NEW)
    assert len(gold & found) > 0.3 * len(gold), (len(gold), len(found), len(gold & found))
    # Plain fine-tuning on the same new data, in-process, forgets the old labels.
    fix_random_seed(0)
    plain = spacy.load(continued["teacher"])
    plain.get_pipe("torch_ner").add_label("ORG")
    optimizer = plain.resume_training()
    examples = [Example(plain.make_doc(doc.text), doc) for doc in new]
    for _ in range(PHASE2_STEPS // 7 // 3 + 1):  # a third of the steps: enough to forget
        random.shuffle(examples)
        for batch in spacy.util.minibatch(examples, 16):
            plain.update(batch, sgd=optimizer, drop=0.1)
    forgotten = _ents(plain, held, OLD)
    assert len(taught & forgotten) < 0.5 * len(taught & kept)


def test_teacher_unchanged_and_student_round_trips(continued, tmp_path):
    assert _hashes(continued["teacher"]) == continued["teacher_hashes"]
    student = spacy.load(continued["student"])
    texts = [d.text for d in DocBin().from_disk(continued["tmp"] / "dev.spacy").get_docs(student.vocab)]
    before = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in student.pipe(texts)]
    student.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again")
    assert [[(e.start, e.end, e.label_) for e in doc.ents] for doc in again.pipe(texts)] == before
    # Training state is not saved: the loaded pipeline updates as usual.
    assert again.get_pipe("torch_ner").teacher is None
    assert again.get_pipe("torch_ner").continual is None
