"""`python -m spacy ray-annotate` in subprocesses: the embedded local Ray
instance, joining a running one with --address, resuming after Ctrl-C and
after the driver was killed part-way, a document that crashes its worker
every time, bad input, arguments and output directories as one line, and a
machine without the ray extra, and teacher outputs for distillation."""
import json
import signal
import subprocess
import sys
import time

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from ray_helpers import COMPONENTS, ROOT, assert_same_annotations, read_output, run_spacy, write_jsonl
from spacy_pytorch_shim.annotate import ERRORS, MANIFEST
from spacy_pytorch_shim.annotate.manifest import iter_shard_paths
from spacy_pytorch_shim.pipeline.distill import TARGETS
from spacy_pytorch_shim.teacher_targets import (
    OUTPUTS, TEACHER_FILE, distillation_corpus_v1, score_docs, teacher_components, teacher_description,
)


def flat(text: str) -> str:
    """CLI output with wasabi's line wrapping undone."""
    return " ".join(text.split())


def test_cli_with_embedded_ray(pipelines, texts, reference, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts["ner"]) + "\n", encoding="utf8")
    result = run_spacy(["ray-annotate", pipelines["ner"], path, tmp_path / "out", "--workers", "2", "--shard-size", "30"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Annotated {len(texts['ner'])} documents" in flat(result.stdout)
    assert f"{len(texts['ner'])}/{len(texts['ner'])}" in result.stderr and "doc/s" in result.stderr  # progress bar
    assert_same_annotations(read_output(tmp_path / "out", spacy.load(pipelines["ner"]).vocab), reference["ner"])


def _handle_sigint() -> None:
    """In the driver's process: SIGINT neither ignored nor blocked, as in a
    terminal, whatever the test process inherited or set (the suite runs
    under CI runners and after other tests in one process)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def shard_lines(manifest) -> list:
    """The manifest's lines that record a shard (not the header, nor the
    lines that name files about to be written)."""
    return [line for line in manifest.read_text().splitlines() if line.startswith('{"shard"')] if manifest.exists() else []


def stop_driver_after(args, manifest, n_shards: int, sig: int) -> subprocess.CompletedProcess:
    """Start the command, send `sig` once `n_shards` shards are recorded."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "spacy", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_handle_sigint,
    )
    deadline = time.monotonic() + 180
    while len(shard_lines(manifest)) < n_shards:
        assert driver.poll() is None, driver.stdout.read()
        assert time.monotonic() < deadline, "no shard written in time"
        time.sleep(0.05)
    driver.send_signal(sig)
    output, _ = driver.communicate(timeout=120)
    return subprocess.CompletedProcess(driver.args, driver.returncode, output, "")


def test_resume_after_ctrl_c_and_after_the_driver_was_killed(ray_address, pipelines, texts, reference, components, tmp_path):
    """Stop the driver with Ctrl-C (SIGINT) after two shards, resume and kill
    it (SIGKILL) after two more, resume to the end: recorded shards are kept
    as they are, and the output is that of an uninterrupted run."""
    nlp = spacy.load(pipelines["ner"])
    nlp.add_pipe("test_slow")
    nlp.to_disk(tmp_path / "pipeline")
    n_docs = 80
    path = write_jsonl(tmp_path / "corpus.jsonl", texts["ner"][:n_docs])
    out = tmp_path / "out"
    args = ["ray-annotate", tmp_path / "pipeline", path, out, "--workers", "1", "--shard-size", "10",
            "--code", COMPONENTS, "--address", ray_address, "--no-progress"]

    interrupted = stop_driver_after(args, out / MANIFEST, 2, signal.SIGINT)
    assert interrupted.returncode == 130, interrupted.stdout
    assert "run the same command again to resume" in flat(interrupted.stdout)
    first = shard_lines(out / MANIFEST)
    assert 2 <= len(first) < 8, "the run was not stopped part-way"

    killed = stop_driver_after(args, out / MANIFEST, len(first) + 2, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    recorded = shard_lines(out / MANIFEST)
    # A resumed run rewrites the manifest in shard order: compare as sets.
    assert set(first) <= set(recorded), "shards recorded by the first run were dropped"
    assert len(recorded) < 8, "the run was not stopped part-way"
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.spacy") if any(f'"{p.name}"' in line for line in recorded)}
    assert len(kept) == len(recorded)

    result = run_spacy(args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Resumed: {len(recorded)} of 8 shards were already done" in flat(result.stdout)
    assert f"Annotated {n_docs - 10 * len(recorded)} documents" in flat(result.stdout)
    for name, mtime in kept.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was annotated again"
    assert_same_annotations(read_output(out, nlp.vocab), reference["ner"][:n_docs])


def test_teacher_targets_on_ray_are_the_one_process_outputs_and_feed_distillation(ray_address, pipelines, texts, tmp_path):
    """--teacher-targets stores what `spacy teacher-targets` would (the
    outputs of score_docs in one process, float16), writes teacher.json, and
    the directory is a DistillationCorpus.v1 targets_path; the same
    directory cannot then be resumed as annotations."""
    path = write_jsonl(tmp_path / "corpus.jsonl", texts["ner"][:50])
    out = tmp_path / "targets"
    args = ["ray-annotate", pipelines["ner"], path, out, "--address", ray_address, "--workers", "2", "--shard-size", "20", "--no-progress"]
    result = run_spacy([*args, "--teacher-targets"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{out / TEACHER_FILE} written" in flat(result.stdout)
    nlp = spacy.load(pipelines["ner"])
    components = teacher_components(nlp)
    expected = score_docs(nlp, [nlp.make_doc(text) for text in texts["ner"][:50]], components)
    docs = [doc for shard in iter_shard_paths(out) for doc in DocBin().from_disk(shard).get_docs(nlp.vocab)]
    assert [doc.text for doc in docs] == [nlp.make_doc(text).text for text in texts["ner"][:50]]
    for doc, outputs in zip(docs, expected):
        shape, data = doc.user_data[OUTPUTS]["torch_ner"]
        stored = numpy.frombuffer(data, dtype=numpy.float16).reshape(shape)
        numpy.testing.assert_allclose(stored, outputs["torch_ner"].astype(numpy.float16), rtol=2e-3, atol=1e-4)
    info = json.loads((out / TEACHER_FILE).read_text())
    assert info["components"] == teacher_description(nlp, components) and info["docs"] == 50
    assert info["bytes"] == sum(shard.stat().st_size for shard in iter_shard_paths(out))
    corpus = distillation_corpus_v1(ROOT / "data" / "btc-sample" / "train.spacy", out)
    scored = [eg for eg, _ in zip(corpus(nlp), range(40)) if TARGETS in eg.reference.user_data]
    assert scored and all(eg.reference.user_data[TARGETS].outputs["torch_ner"].shape[0] == len(eg.reference) for eg in scored)

    again = run_spacy(args)
    assert again.returncode == 1
    assert "holds shards of a different output (recorded in manifest.jsonl: the teacher outputs of torch_ner; this run: annotations)" in flat(again.stdout)


def test_bad_input_is_named_with_its_line(pipelines, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf8")
    result = run_spacy(["ray-annotate", pipelines["ner"], path, tmp_path / "out"])
    assert result.returncode == 1
    assert f"{path}:2: no text field 'text' (fields: body)" in flat(result.stdout)
    result = run_spacy(["ray-annotate", tmp_path / "no-pipeline", path, tmp_path / "out", "--text-field", "body"])
    assert result.returncode == 1
    assert "no-pipeline: no such pipeline (neither a directory nor an installed package)" in flat(result.stdout)
    (tmp_path / "not-a-pipeline").mkdir()
    (tmp_path / "not-a-pipeline" / "config.cfg").write_text("not a config\n")
    result = run_spacy(["ray-annotate", tmp_path / "not-a-pipeline", path, tmp_path / "out", "--text-field", "body"])
    assert result.returncode == 1
    assert "not-a-pipeline/config.cfg: not a readable pipeline config" in flat(result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_without_ray_the_command_says_how_to_install_it(pipelines, tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", ["x"])
    script = (
        "import sys; sys.modules['ray'] = None; from spacy.cli import setup_cli; "
        f"sys.argv = ['spacy', 'ray-annotate', {str(pipelines['ner'])!r}, {str(path)!r}, {str(tmp_path / 'out')!r}]; "
        "setup_cli()"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'pip install "spacy-pytorch-shim[ray]"' in flat(result.stdout)


def test_a_document_that_crashes_its_worker_every_time_ends_the_run(ray_address, pipelines, texts, components, tmp_path):
    """Two worker deaths (in its batch, then alone), then the run ends,
    naming the document, which is in errors.jsonl."""
    nlp = spacy.load(pipelines["ner"])
    nlp.add_pipe("test_crash_on", config={"token": "CRASH"})
    nlp.to_disk(tmp_path / "pipeline")
    corpus = texts["ner"][:6]
    corpus[4] = "it will CRASH here"
    path = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    result = run_spacy(["ray-annotate", tmp_path / "pipeline", path, tmp_path / "out", "--shard-size", "3",
                        "--code", COMPONENTS, "--address", ray_address, "--no-progress"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{path}:5: document 4 killed its worker twice" in flat(result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    errors = [json.loads(line) for line in (tmp_path / "out" / ERRORS).read_text().splitlines()]
    assert [(e["index"], e["file"], e["line"]) for e in errors] == [(4, str(path), 5)]


def _undecodable_spacy(tmp_path):
    doc_bin = DocBin(docs=[spacy.blank("en")("fine"), spacy.blank("en")("broken")])
    doc_bin.span_groups[1] = b"\x93not span groups"
    (tmp_path / "in.spacy").write_bytes(doc_bin.to_bytes())
    return [tmp_path / "in.spacy", tmp_path / "out"], "in.spacy:2: doc 2 cannot be decoded"


def _damaged_manifest(tmp_path):
    (tmp_path / "in.txt").write_text("one\n", encoding="utf8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST).write_text('{"manifest": 1, "pipeline": {}, "input": {}}\n{"shard": 0, "file": null}\n')
    return [tmp_path / "in.txt", tmp_path / "out"], f"out/{MANIFEST}:2: damaged manifest line"


def _bad_shard_size(tmp_path):
    (tmp_path / "in.txt").write_text("one\n", encoding="utf8")
    return [tmp_path / "in.txt", tmp_path / "out", "--shard-size", "0"], "shard_size (--shard-size): 0 is not allowed; expected a whole number of at least 1"


@pytest.mark.parametrize("make", [_undecodable_spacy, _damaged_manifest, _bad_shard_size])
def test_user_errors_are_one_line_before_any_work(pipelines, tmp_path, make):
    args, message = make(tmp_path)
    result = run_spacy(["ray-annotate", pipelines["ner"], *args])
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in flat(result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
