"""project.yml runs with weasel (spaCy's project tool) on the shipped
samples, outside the checkout: the `all` workflow (train, evaluate, package,
benchmark) with a short training, and the grid command's script resolves."""
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


def test_weasel_runs_the_workflow_on_the_samples(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project)
    shutil.copytree(ROOT / "configs", project / "configs", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(ROOT / "bench", project / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
    (project / "data").symlink_to(ROOT / "data", target_is_directory=True)
    weasel("run", "all", ".", "--vars.max_steps", "10", "--vars.eval_frequency", "5", "--vars.speed_warmup", "0", cwd=project)
    scores = srsly.read_json(project / "training" / "ner" / "test-scores.json")
    assert "ents_f" in scores
    assert (project / "packages" / "en_torch_project-0.0.1" / "dist" / "en_torch_project-0.0.1.tar.gz").exists()
    dry = weasel("run", "grid", ".", "--dry", cwd=project)
    assert "bench/grid.py --config configs/ner.cfg --data data/btc-sample" in dry.stdout
