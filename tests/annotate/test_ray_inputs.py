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
from spacy_pytorch_shim.annotate.manifest import ERRORS, MANIFEST, Manifest, input_fingerprint


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


def test_an_input_file_named_inside_the_output_directory_is_refused(tmp_path, pipelines):
    """A directory or glob input leaves the output directory out; a file
    named there is refused."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "000000.spacy").write_bytes(b"")
    with pytest.raises(InputError, match=r"000000\.spacy: an input file inside the output directory"):
        annotate(pipelines["ner"], tmp_path / "out" / "000000.spacy", tmp_path / "out")
    write_jsonl(tmp_path / "a.jsonl", ["x"])
    assert find_input_files(tmp_path, tmp_path / "out") == [tmp_path / "a.jsonl"]
    assert find_input_files(str(tmp_path / "**" / "*.*"), tmp_path / "out") == [tmp_path / "a.jsonl"]


def test_foreign_spacy_files_in_output_are_refused(tmp_path, pipelines):
    path = write_jsonl(tmp_path / "a.jsonl", ["x"])
    out = tmp_path / "out"
    out.mkdir()
    DocBin().to_disk(out / "mine.spacy")
    with pytest.raises(OutputError, match=f"holds mine.spacy but no {MANIFEST}"):
        annotate(pipelines["ner"], path, out)
    assert (out / "mine.spacy").exists()


def test_a_spacy_doc_that_cannot_be_decoded_is_named_before_any_work(tmp_path):
    """The container reads, its second doc does not decode."""
    nlp = spacy.blank("en")
    doc_bin = DocBin(docs=[nlp("one"), nlp("two"), nlp("three")])
    doc_bin.span_groups[1] = b"\x93not span groups"
    (tmp_path / "bad.spacy").write_bytes(doc_bin.to_bytes())
    with pytest.raises(InputError, match=r"bad\.spacy:2: doc 2 cannot be decoded \("):
        list(plan_shards([tmp_path / "bad.spacy"], 10, "text"))
    assert gc.isenabled()


def test_files_the_command_did_not_write_are_kept(tmp_path):
    """Temporary-looking files and directories of others stay, with or
    without a manifest; only files the manifest names are removed."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.tmp").write_text("mine")
    (out / "x.tmp").mkdir()
    header = {"pipeline": {"path": "p", "sha256": "0" * 64}, "input": {"files": []}}
    manifest = Manifest.open(out, header)
    manifest.add(0, b"shard zero", 1, [])
    (out / "000001.spacy.tmp").write_bytes(b"cut short")  # as a crash leaves it
    with (out / MANIFEST).open("a") as file:
        file.write(json.dumps({"writing": ["000001.spacy", "000001.spacy.tmp"]}) + "\n")
    Manifest.open(out, header)
    assert sorted(p.name for p in out.iterdir()) == ["000000.spacy", MANIFEST, "notes.tmp", "x.tmp"]
    assert (out / "notes.tmp").read_text() == "mine"

    (out / "000007.spacy").write_bytes(b"someone else's")
    with pytest.raises(OutputError, match=r"000007\.spacy: not written by this command"):
        Manifest.open(out, header)
    assert (out / "000007.spacy").read_bytes() == b"someone else's"
    (out / "000007.spacy").unlink()
    (out / ERRORS).write_text("someone else's")
    with pytest.raises(OutputError, match=r"errors\.jsonl: not written by this command"):
        Manifest.open(out, header)


GOOD_ENTRY = {"shard": 0, "file": "000000.spacy", "docs": 1, "sha256": "0" * 64, "errors": []}


@pytest.mark.parametrize(
    "lines,message",
    [
        ([b"[1]"], r":1: damaged manifest line \(a list, not a JSON object\)"),
        ([b"\xff\xfe"], r":1: damaged manifest line \(not valid UTF-8\)"),
        ([b'{"manifest": 1}'], r":1: damaged manifest header"),
        ([None, json.dumps({**GOOD_ENTRY, "sha256": None}).encode(), json.dumps(GOOD_ENTRY).encode()],
         r":2: damaged manifest line \(a shard line with a missing or wrong value\)"),
        ([None, json.dumps({**GOOD_ENTRY, "file": "../../elsewhere"}).encode()], r":2: damaged manifest line"),
        ([None, b'{"shard": 0}'], r":2: damaged manifest line \(unexpected fields shard\)"),
        ([None, b"\xff", json.dumps(GOOD_ENTRY).encode()], r":2: damaged manifest line \(not valid UTF-8\)"),
        ([None, b'{"writing": ["../x"]}'], r":2: damaged manifest line \(a 'writing' line"),
    ],
)
def test_a_damaged_manifest_is_named_with_its_line(tmp_path, lines, message):
    """None stands for a good header."""
    header = {"pipeline": {"path": "p", "sha256": "0" * 64}, "input": {"files": []}}
    out = tmp_path / "out"
    out.mkdir()
    good = json.dumps({"manifest": 1, **header}).encode()
    (out / MANIFEST).write_bytes(b"\n".join(good if line is None else line for line in lines) + b"\n")
    with pytest.raises(OutputError, match=f"{MANIFEST}{message}"):
        Manifest.open(out, header)


@pytest.mark.parametrize(
    "argument,value,message",
    [
        ("workers", 0, r"workers \(--workers\): 0 is not allowed; expected a whole number of at least 1"),
        ("workers", 1.5, r"workers \(--workers\): 1\.5 is not allowed"),
        ("shard_size", -3, r"shard_size \(--shard-size\): -3 is not allowed"),
        ("batch_size", 0, r"batch_size \(--batch-size\): 0 is not allowed"),
        ("threads_per_worker", True, r"threads_per_worker \(--threads-per-worker\): True is not allowed"),
        ("num_gpus", -1.0, r"num_gpus \(--gpus-per-worker\): -1\.0 is not allowed; expected a number from 0 to 1, or a whole number"),
        ("num_gpus", 1.5, r"num_gpus \(--gpus-per-worker\): 1\.5 is not allowed"),
        ("num_gpus", float("nan"), r"num_gpus \(--gpus-per-worker\): nan is not allowed"),
        ("num_gpus", float("inf"), r"num_gpus \(--gpus-per-worker\): inf is not allowed"),
        ("on_error", "ignore", r"on_error \(--on-error\): 'ignore' is not allowed; expected 'skip' or 'fail'"),
        ("text_field", "", r"text_field \(--text-field\): '' is not allowed"),
        ("address", "", r"address \(--address\): '' is not allowed"),
        ("code_path", "no/such/code.py", r"code_path \(--code\): 'no/such/code.py' is not allowed; expected an existing Python file"),
    ],
)
def test_bad_arguments_are_named_with_value_and_what_is_allowed(tmp_path, pipelines, argument, value, message):
    path = write_jsonl(tmp_path / "a.jsonl", ["x"])
    with pytest.raises(ValueError, match=message):
        annotate(pipelines["ner"], path, tmp_path / "out", **{argument: value})
    assert not (tmp_path / "out").exists()
