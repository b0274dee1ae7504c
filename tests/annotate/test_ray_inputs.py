"""Shard plans and input validation, on the driver (no Ray): every input
format, and every bad input with a message that names the file and line."""
import gc
import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from ray_helpers import write_jsonl
from spacy_pytorch_shim.annotate import InputError, OutputError, PipelineError, annotate
from spacy_pytorch_shim.annotate.inputs import find_input_files, plan_shards, read_shard
from spacy_pytorch_shim.annotate.manifest import MANIFEST, Manifest, input_fingerprint


def texts_of(shards, text_field="text"):
    vocab = spacy.blank("en").vocab
    records = [r for shard in shards for r in read_shard(shard, text_field, vocab)]
    assert [r.index for r in records] == list(range(len(records)))
    return [r.text if r.doc is None else r.doc.text for r in records], records


def test_jsonl_shards_cover_every_record_once(tmp_path):
    texts = [f"text number {i}" for i in range(23)]
    path = write_jsonl(tmp_path / "a.jsonl", texts, source="x")
    shards = list(plan_shards([path], 5, "text"))
    assert [s.count for s in shards] == [5, 5, 5, 5, 3]
    assert [s.first_index for s in shards] == [0, 5, 10, 15, 20]
    got, records = texts_of(shards)
    assert got == texts
    assert records[7].line == 8
    assert records[7].fields == {"id": "doc-7", "source": "x"}


def test_txt_blank_lines_hold_no_document_and_lines_are_kept(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first\n\nsecond\r\n  \nthird", encoding="utf8")
    shards = list(plan_shards([path], 2, "text"))
    got, records = texts_of(shards)
    assert got == ["first", "second", "third"]
    assert [r.line for r in records] == [1, 3, 5]


def test_spacy_files_and_several_files_in_corpus_order(tmp_path):
    nlp = spacy.blank("en")
    DocBin(docs=[nlp(f"doc {i}") for i in range(7)]).to_disk(tmp_path / "b.spacy")
    (tmp_path / "c.txt").write_text("x\ny\n", encoding="utf8")
    write_jsonl(tmp_path / "a.jsonl", ["j0", "j1"])
    files = find_input_files(tmp_path)
    assert [f.name for f in files] == ["a.jsonl", "b.spacy", "c.txt"]
    assert find_input_files(str(tmp_path / "*.spacy")) == [tmp_path / "b.spacy"]
    shards = list(plan_shards(files, 3, "text"))
    assert [(Path(s.path).name, s.count) for s in shards] == [("a.jsonl", 2), ("b.spacy", 3), ("b.spacy", 3), ("b.spacy", 1), ("c.txt", 2)]
    got, records = texts_of(shards)
    assert got == ["j0", "j1"] + [f"doc {i}" for i in range(7)] + ["x", "y"]
    assert records[2 + 4].line == 5  # the fifth doc of b.spacy


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "ok"}\n{"body": "no text"}\n', r"a\.jsonl:2: no text field 'text' \(fields: body\)"),
        ('{"text": "ok"}\n\n{"text": "broken\n', r"a\.jsonl:3: invalid JSON"),
        ('{"text": 3}\n', r"a\.jsonl:1: field 'text' is a int, not a string"),
        ('["text"]\n', r"a\.jsonl:1: expected a JSON object, found list"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "a.jsonl"
    path.write_text(content, encoding="utf8")
    with pytest.raises(InputError, match=message):
        list(plan_shards([path], 10, "text"))


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"a\.txt:2: not valid UTF-8"):
        list(plan_shards([path], 10, "text"))


def test_corrupt_spacy_file_is_named_and_gc_stays_on(tmp_path):
    path = tmp_path / "bad.spacy"
    path.write_bytes(b"not a docbin")
    assert gc.isenabled()
    with pytest.raises(InputError, match=r"bad\.spacy: not a readable \.spacy"):
        list(plan_shards([path], 10, "text"))
    assert gc.isenabled()


def test_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="nothing.jsonl: no such file or directory"):
        find_input_files(tmp_path / "nothing.jsonl")
    with pytest.raises(InputError, match=r"no file matches this pattern"):
        find_input_files(str(tmp_path / "*.jsonl"))
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(InputError, match=r"notes\.md: unknown input format"):
        find_input_files(tmp_path / "notes.md")
    with pytest.raises(InputError, match=r"no \.jsonl, \.txt or \.spacy files"):
        find_input_files(tmp_path)


def test_pipeline_that_does_not_exist(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ["x"])
    with pytest.raises(PipelineError, match="no/such/pipeline: no such pipeline"):
        annotate("no/such/pipeline", path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_of_a_different_pipeline_or_input_is_refused(tmp_path, pipelines):
    path = write_jsonl(tmp_path / "a.jsonl", ["x", "y"])
    other = write_jsonl(tmp_path / "b.jsonl", ["x", "y", "z"])
    out = tmp_path / "out"
    ner_header = {
        "pipeline": {"path": str(pipelines["ner"]), "sha256": "0" * 64},
        "input": input_fingerprint([path.resolve()], 1000, "text"),
    }
    Manifest.open(out, ner_header)
    with pytest.raises(OutputError, match=r"holds shards of a different pipeline"):
        annotate(pipelines["textcat"], path, out)
    from spacy_pytorch_shim.annotate.manifest import pipeline_fingerprint

    out = tmp_path / "out-ner"
    ner_header["pipeline"]["sha256"] = pipeline_fingerprint(pipelines["ner"])
    Manifest.open(out, ner_header)
    with pytest.raises(OutputError, match=r"holds shards of a different input .*1 file\(s\) a\.jsonl.*this run: 1 file\(s\) b\.jsonl"):
        annotate(pipelines["ner"], other, out)
    with pytest.raises(OutputError, match=r"different input .*shard size 1000.*this run: .*shard size 7"):
        annotate(pipelines["ner"], path, out, shard_size=7)
    assert json.loads((out / MANIFEST).read_text().splitlines()[0])["input"]["files"][0][0] == str(path.resolve())


def test_output_directory_inside_the_input_is_refused(tmp_path, pipelines):
    """A rerun would read the first run's shards as input."""
    write_jsonl(tmp_path / "a.jsonl", ["x"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "000000.spacy").write_bytes(b"")
    with pytest.raises(InputError, match=r"000000\.spacy: an input file inside the output directory"):
        annotate(pipelines["ner"], tmp_path, tmp_path / "out")


def test_foreign_spacy_files_in_output_are_refused(tmp_path, pipelines):
    path = write_jsonl(tmp_path / "a.jsonl", ["x"])
    out = tmp_path / "out"
    out.mkdir()
    DocBin().to_disk(out / "mine.spacy")
    with pytest.raises(OutputError, match=f"holds .spacy files but no {MANIFEST}"):
        annotate(pipelines["ner"], path, out)
    assert (out / "mine.spacy").exists()
