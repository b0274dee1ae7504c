"""Runs on a local Ray instance (session fixture): exactly once and the same
annotations as one-process `nlp.pipe` (NER and textcat), every input format,
a worker killed mid-run, documents that raise (skip and fail), a rerun
of a finished run that annotates nothing, an output directory inside the
input directory, a pipeline that workers cannot load, and the teacher
targets' settings checked before any work."""
import json
import os
import shutil

import pytest
import spacy
from spacy.tokens import DocBin

from ray_helpers import assert_same_annotations, read_output, write_jsonl
from spacy_pytorch_shim.annotate import ERRORS, MANIFEST, AnnotationError, PipelineError, annotate
from spacy_pytorch_shim.annotate import run as annotate_module


def test_ner_exactly_once_and_as_nlp_pipe(ray_address, pipelines, texts, reference, tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", texts["ner"], source="btc")
    result = annotate(pipelines["ner"], path, tmp_path / "out", workers=2, shard_size=25, batch_size=8)
    assert (result.shards_total, result.docs, result.errors) == (5, len(texts["ner"]), 0)
    # Tiny shards: the second actor may start after the first did them all.
    assert 1 <= len(result.workers) <= 2 and all(w.load_s > 0 and w.peak_rss_mb > 0 for w in result.workers.values())
    docs = read_output(tmp_path / "out", spacy.load(pipelines["ner"]).vocab)
    assert sum(len(d.ents) for d in docs) > 0
    assert_same_annotations(docs, reference["ner"])
    assert docs[3].user_data["fields"] == {"id": "doc-3", "source": "btc"}
    assert docs[3].user_data["line"] == 4
    assert docs[3].user_data["file"] == str(path)
    lines = [json.loads(line) for line in (tmp_path / "out" / MANIFEST).read_text().splitlines()[1:]]
    assert sorted(line["shard"] for line in lines if "shard" in line) == [0, 1, 2, 3, 4]
    assert (tmp_path / "out" / ERRORS).read_text() == ""

    again = annotate(pipelines["ner"], path, tmp_path / "out", workers=2, shard_size=25, batch_size=8)
    assert (again.shards_kept, again.docs) == (5, 0)
    assert_same_annotations(read_output(tmp_path / "out", docs[0].vocab), reference["ner"])


def test_textcat_txt_and_spacy_inputs_as_nlp_pipe(ray_address, pipelines, texts, reference, tmp_path, monkeypatch):
    """A directory with a .txt file (blank lines between documents) and a
    .spacy file: the corpus is the files in name order. Two tasks for the
    four shards: a task that takes several shards returns each."""
    monkeypatch.setattr(annotate_module, "MAX_TASKS", 2)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    half = len(texts["textcat"]) // 2
    (corpus / "a.txt").write_text("\n\n".join(texts["textcat"][:half]) + "\n", encoding="utf8")
    blank = spacy.blank("en")
    DocBin(docs=[blank(t) for t in texts["textcat"][half:]]).to_disk(corpus / "b.spacy")
    result = annotate(pipelines["textcat"], corpus, tmp_path / "out", workers=2, shard_size=30)
    assert (result.shards_total, result.docs) == (4, len(texts["textcat"]))
    docs = read_output(tmp_path / "out", spacy.load(pipelines["textcat"]).vocab)
    assert_same_annotations(docs, reference["textcat"])
    assert docs[1].user_data["line"] == 3 and docs[half + 1].user_data["line"] == 2


def test_a_killed_worker_costs_a_retry_not_a_document(ray_address, pipelines, texts, reference, components, tmp_path):
    marker = tmp_path / "killed"
    nlp = spacy.load(pipelines["ner"])
    nlp.add_pipe("test_kill_once", config={"marker": str(marker), "index": 37})
    nlp.to_disk(tmp_path / "pipeline")
    path = write_jsonl(tmp_path / "corpus.jsonl", texts["ner"])
    result = annotate(tmp_path / "pipeline", path, tmp_path / "out", workers=2, shard_size=20, code_path=components)
    assert marker.exists(), "the worker was never killed"
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text()), 0)
    assert result.docs == len(texts["ner"])
    assert_same_annotations(read_output(tmp_path / "out", nlp.vocab), reference["ner"])


def test_documents_that_raise_skip_and_fail(ray_address, pipelines, texts, reference, components, tmp_path):
    nlp = spacy.load(pipelines["ner"])
    nlp.add_pipe("test_raise_on", config={"token": "BOOM"})
    nlp.to_disk(tmp_path / "pipeline")
    bad = {7: "BOOM goes one", 53: "and BOOM goes another"}
    corpus = [bad.get(i, text) for i, text in enumerate(texts["ner"])]
    path = write_jsonl(tmp_path / "corpus.jsonl", corpus)

    result = annotate(tmp_path / "pipeline", path, tmp_path / "skip", workers=2, shard_size=30, code_path=components)
    assert (result.docs, result.errors) == (len(corpus) - 2, 2)
    errors = [json.loads(line) for line in (tmp_path / "skip" / ERRORS).read_text().splitlines()]
    assert [(e["index"], e["line"], e["file"]) for e in errors] == [(7, 8, str(path)), (53, 54, str(path))]
    assert all(e["error"] == "ValueError: found 'BOOM'" for e in errors)
    docs = read_output(tmp_path / "skip", nlp.vocab)
    kept = [i for i in range(len(corpus)) if i not in bad]
    assert [d.user_data["index"] for d in docs] == kept
    expected = [reference["ner"][i] for i in kept]
    for doc in docs:
        doc.user_data["index"] = kept.index(doc.user_data["index"])
    assert_same_annotations(docs, expected)

    with pytest.raises(AnnotationError, match=r"corpus\.jsonl:(8: document 7|54: document 53) made the pipeline raise: ValueError: found 'BOOM'"):
        annotate(tmp_path / "pipeline", path, tmp_path / "fail", workers=2, shard_size=30, code_path=components, on_error="fail")
    shutil.rmtree(tmp_path / "fail")


def test_an_output_directory_inside_the_input_directory_resumes(ray_address, pipelines, texts, tmp_path):
    """The input directory's files are read without the output's shards and manifest."""
    write_jsonl(tmp_path / "a.jsonl", texts["ner"][:3])
    first = annotate(pipelines["ner"], tmp_path, tmp_path / "out", shard_size=2)
    assert (first.shards_total, first.docs) == (2, 3)
    again = annotate(pipelines["ner"], tmp_path, tmp_path / "out", shard_size=2)
    assert (again.shards_kept, again.docs) == (2, 0)


def test_a_pipeline_that_workers_cannot_load_is_named(ray_address, pipelines, texts, tmp_path):
    """Its config reads (checked before the run); its weights do not."""
    shutil.copytree(pipelines["ner"], tmp_path / "pipeline")
    for path in (tmp_path / "pipeline").glob("*/model"):
        path.write_bytes(b"not weights")
    path = write_jsonl(tmp_path / "corpus.jsonl", texts["ner"][:2])
    with pytest.raises(PipelineError, match=r"pipeline: cannot be loaded in a worker \(\w+: "):
        annotate(tmp_path / "pipeline", path, tmp_path / "out")


@pytest.mark.parametrize("settings, message", [
    ({"teacher_targets": True, "components": ["torch_ner", "parser"]},
     "components (--components): 'parser' is not a torch component of the teacher (its torch components: ['torch_ner'])"),
    ({"components": ["torch_ner"]},
     "components (--components): ['torch_ner'] is not allowed; expected none unless teacher_targets (--teacher-targets) is set"),
])
def test_teacher_targets_settings_are_checked_before_any_work(pipelines, tmp_path, settings, message):
    (tmp_path / "in.txt").write_text("one\n", encoding="utf8")
    with pytest.raises(ValueError) as err:
        annotate(pipelines["ner"], tmp_path / "in.txt", tmp_path / "out", **settings)
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()
