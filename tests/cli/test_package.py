"""`spacy package` for a torch pipeline, installed into a fresh virtual
environment: the wheel declares spacy-pytorch-shim as a requirement (spaCy
derives it from the factory and architectures in the config), and in an
environment that has nothing but torch, this package (a regular install, not
editable) and the wheel, `spacy.load("en_test_torch")` predicts exactly what
the original pipeline predicts.

Takes one to three minutes: most of it is pip installing torch and spaCy's
dependencies (from the machine's local wheels) into the new environment.

`spacy package --build wheel` needs the `build` module (or the deprecated
`wheel`) in the interpreter that runs it. When the test's interpreter has
neither, the test installs `build` into the fresh environment and packages
from there instead of touching the development environment.
"""
import importlib.util
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TORCH_VERSION = "2.13.0"
PIP_TIMEOUT = 600
NAME = "test_torch"
VERSION = "0.0.1"

PREDICT_SCRIPT = r"""
import json, sys
import spacy
import spacy_pytorch_shim

texts = json.loads(open(sys.argv[1], encoding="utf8").read())
nlp = spacy.load("en_test_torch")
print(json.dumps({
    "shim_file": spacy_pytorch_shim.__file__,
    "pipeline": nlp.pipe_names,
    "cats": [doc.cats for doc in nlp.pipe(texts)],
}))
"""


def _has_build_frontend() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("build", "wheel"))


def _copy_sources(root: Path, dest: Path) -> Path:
    """The files a `pip install` of the repo needs: top-level files (setup.cfg,
    pyproject.toml, README...), the package and configs/. Installing from a copy keeps
    setuptools' in-tree build/ and egg-info out of the working tree."""
    dest.mkdir()
    for path in root.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, dest / path.name)
    for package in ("spacy_pytorch_shim", "configs"):  # configs/: package data (setup.cfg)
        shutil.copytree(root / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def test_spacy_package_wheel_installs_and_loads_in_fresh_venv(cli, trained, tiny_data, tmp_path):
    import spacy
    from spacy.tokens import DocBin

    model = cli.trained_pipeline(trained, "textcat") / "model-best"
    texts = [
        doc.text
        for doc in DocBin().from_disk(cli.DATA / "banking77-sample" / "test.spacy").get_docs(spacy.blank("en").vocab)
    ][:25]
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts), encoding="utf8")

    # A fresh environment: torch first (the CPU build lies on this machine's
    # disk; a bare `pip install` of the package would try to pull a CUDA
    # build), then this package from a copy of the repo's sources.
    venv = tmp_path / "venv"
    cli.run_cmd([sys.executable, "-m", "venv", venv], timeout=120)
    py = venv / "bin" / "python"
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cli.run_cmd([*pip, f"torch=={TORCH_VERSION}"], timeout=PIP_TIMEOUT, cwd=tmp_path)
    cli.run_cmd([*pip, _copy_sources(cli.ROOT, tmp_path / "src")], timeout=PIP_TIMEOUT, cwd=tmp_path)

    # The fresh environment's commands run in tmp_path: from the repo root,
    # `python -c` would import the working tree's spacy_pytorch_shim.
    check = cli.run_cmd([py, "-c", "import spacy, spacy_pytorch_shim"], timeout=120, check=False, cwd=tmp_path)
    if check.returncode != 0:
        hint = ""
        if "No module named 'click'" in check.stderr:
            hint = (
                "\nspaCy 3.8 imports click (spacy/cli/_util.py) but no longer gets it "
                "through typer-slim/typer, so a fresh install of this package cannot "
                "import spacy. Fix: add `click>=8.0` to install_requires in setup.cfg."
            )
        pytest.fail(f"`import spacy` fails in a fresh install of this package:\n{check.stderr[-3000:]}{hint}")

    # spacy package: from the test's interpreter when it can build wheels,
    # else from the fresh environment with `build` added there.
    packager = sys.executable
    if not _has_build_frontend():
        cli.run_cmd([*pip, "build"], timeout=PIP_TIMEOUT, cwd=tmp_path)
        packager = str(py)
    out = tmp_path / "packages"
    out.mkdir()
    cli.run(
        ["package", model, out, "--name", NAME, "--version", VERSION, "--build", "wheel", "--force"],
        python=packager,
        timeout=PIP_TIMEOUT,
        cwd=tmp_path,
    )
    wheels = list(out.glob(f"en_{NAME}-{VERSION}/dist/en_{NAME}-{VERSION}-*.whl"))
    assert len(wheels) == 1, list(out.rglob("*"))
    wheel = wheels[0]

    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"en_{NAME}-{VERSION}.dist-info/METADATA").decode("utf8")
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    shim_reqs = [r for r in requires if r.replace("_", "-").lower().startswith("spacy-pytorch-shim")]
    assert shim_reqs, f"the wheel does not require spacy-pytorch-shim: {requires}"
    assert any(r.lower().startswith("spacy") and "pytorch" not in r for r in requires), requires

    cli.run_cmd([*pip, wheel], timeout=PIP_TIMEOUT, cwd=tmp_path)
    result = cli.run_cmd([py, "-c", PREDICT_SCRIPT, texts_path], timeout=300, cwd=tmp_path)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    # The package really is the installed copy, not the working tree.
    assert Path(got["shim_file"]).resolve().is_relative_to(venv.resolve()), got["shim_file"]
    assert got["pipeline"] == ["torch_textcat"]

    nlp = spacy.load(model)
    expected = [doc.cats for doc in nlp.pipe(texts)]
    assert len(got["cats"]) == len(expected) == len(texts)
    for want, have in zip(expected, got["cats"]):
        assert have.keys() == want.keys() and len(want) == 77
        for label, score in want.items():
            assert have[label] == pytest.approx(score, abs=1e-6)
