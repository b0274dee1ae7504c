"""Helpers for the Ray tests (a module, not the conftest: several conftests
in one session are not importable by name)."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from spacy.tokens import Doc

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = Path(__file__).with_name("components.py")
CLI_TIMEOUT = 240


def write_jsonl(path: Path, texts: List[str], **extra) -> Path:
    with path.open("w", encoding="utf8") as file:
        for i, text in enumerate(texts):
            file.write(json.dumps({"id": f"doc-{i}", "text": text, **extra}) + "\n")
    return path


def read_output(output_dir: Path, vocab) -> List[Doc]:
    from spacy_pytorch_shim.annotate import read_annotations

    return list(read_annotations(output_dir, vocab))


def assert_same_annotations(docs: List[Doc], expected: List[Doc]) -> None:
    """Every expected doc exactly once, in order, with the same entities
    and cats (within 1e-6)."""
    assert [d.user_data["index"] for d in docs] == list(range(len(expected)))
    for doc, ref in zip(docs, expected):
        assert doc.text == ref.text
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [
            (e.start_char, e.end_char, e.label_) for e in ref.ents
        ]
        assert doc.cats.keys() == ref.cats.keys()
        for label, score in ref.cats.items():
            assert abs(doc.cats[label] - score) <= 1e-6, (doc.text, label)


def run_spacy(args: Sequence, timeout: float = CLI_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """`python -m spacy *args` in a subprocess, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "spacy", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )
