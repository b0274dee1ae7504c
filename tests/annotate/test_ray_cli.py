"""`python -m spacy ray-annotate` in subprocesses: the embedded local Ray
instance, joining a running one with --address, resuming after Ctrl-C and
after the driver was killed part-way, bad input, and a machine without the ray extra."""
import signal
import subprocess
import sys
import time

import spacy

from ray_helpers import COMPONENTS, assert_same_annotations, read_output, run_spacy, write_jsonl
from spacy_pytorch_shim.annotate import MANIFEST


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
    while not manifest.exists() or len(manifest.read_text().splitlines()) < 1 + n_shards:
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
    first = (out / MANIFEST).read_text().splitlines()[1:]
    assert 2 <= len(first) < 8, "the run was not stopped part-way"

    killed = stop_driver_after(args, out / MANIFEST, len(first) + 2, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    recorded = (out / MANIFEST).read_text().splitlines()[1:]
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


def test_bad_input_is_named_with_its_line(pipelines, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf8")
    result = run_spacy(["ray-annotate", pipelines["ner"], path, tmp_path / "out"])
    assert result.returncode == 1
    assert f"{path}:2: no text field 'text' (fields: body)" in flat(result.stdout)
    result = run_spacy(["ray-annotate", tmp_path / "no-pipeline", path, tmp_path / "out", "--text-field", "body"])
    assert result.returncode == 1
    assert "no-pipeline: no such pipeline (neither a directory nor an installed package)" in flat(result.stdout)


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
