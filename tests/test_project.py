"""project.yml runs with weasel (spaCy's project tool) on the shipped
samples, outside the checkout: the `all` workflow (train, evaluate, package,
benchmark) with a short training, the grid command's script resolves, and
the `distill` workflow (a transformer teacher, its stored outputs on the
sample's unlabelled text, a distilled and a gold-only student, the
comparison) runs on a tiny random encoder."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import srsly

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def weasel(*args, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "weasel", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project)
    for folder in ("configs", "bench", "scripts"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("*.py" if folder == "configs" else "results", "__pycache__"))
    (project / "data").symlink_to(ROOT / "data", target_is_directory=True)
    return project


def test_weasel_runs_the_workflow_on_the_samples(tmp_path):
    project = copy_project(tmp_path)
    weasel("run", "all", ".", "--vars.max_steps", "10", "--vars.eval_frequency", "5", "--vars.speed_warmup", "0", cwd=project)
    scores = srsly.read_json(project / "training" / "ner" / "test-scores.json")
    assert "ents_f" in scores
    assert (project / "packages" / "en_torch_project-0.0.1" / "dist" / "en_torch_project-0.0.1.tar.gz").exists()
    dry = weasel("run", "grid", ".", "--dry", cwd=project)
    assert "bench/grid.py --config configs/ner.cfg --data data/btc-sample" in dry.stdout


def test_weasel_distill_workflow_runs_teacher_targets_students_and_compare(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "models" / "transformer"))
    from tiny_encoders import sample_texts, save_tiny_encoder

    encoder = save_tiny_encoder("bert", tmp_path / "encoder", sample_texts())
    project = copy_project(tmp_path)
    steps = ["--vars.max_steps", "6", "--vars.eval_frequency", "3", "--vars.encoder", encoder]
    weasel("run", "distill", ".", *steps, cwd=project)
    out = project / "training" / "distill"
    teacher = srsly.read_json(out / "teacher" / "model-best" / "meta.json")
    assert teacher["pipeline"] == ["torch_ner"]
    assert srsly.read_json(out / "targets" / "teacher.json")["docs"] == 1000  # data/btc-sample/unlabelled.jsonl
    assert '@readers = "spacy-pytorch-shim.DistillationCorpus.v1"' in (out / "student.cfg").read_text()
    table = (out / "compare.md").read_text().splitlines()
    assert [row.split(" (")[0] for row in table[2:]] == ["| teacher", "| student", "| gold-only"], table
    assert all("ents_f" in row for row in table[2:]), table
