"""The documentation runs as written: every code block of README.md and
docs/*.md is run, in order, as a user would run it, from a temporary
directory outside the checkout that holds only the shipped samples (`data/`).
The package is the installed one; configs come from it (`python -m spacy init
torch-config`). Every config, data file, make target and local link a page
names exists.

How each block is run (a marker is an HTML comment on the line before the
block: `<!-- test: KIND free text -->`):

* ```python blocks run in one namespace per page, in the page's directory.
* ```sh blocks run with bash (`set -e`), `python` and `pip` being the
  interpreter of the tests. A block whose commands are repository tools
  (`make`, `bench/`, `scripts/`, `../shared/` data, `.venv/`) runs in a
  checkout only: its make targets and files are checked, it is not run.
* `<!-- test: full -->`: a long run. It is not run; the next block must be the
  same commands with `--training.*` options added (the quick variant), and
  that one runs.
* `<!-- test: file NAME -->`: the block is written to NAME in the page's
  directory, as the page tells the user to do (a python block also runs).
* `<!-- test: checkout -->`: run in a copy of the repository's files, in the
  directory `spacy-pytorch-shim` next to the page's (for building the wheel).
* `<!-- test: components-config -->`: an ```ini block of `[components.NAME]`
  sections, built into a pipeline.
* `<!-- test: skip (reason) -->`: not run; only for blocks that cannot run
  here (a GPU, a cluster, the internet).
* A page that writes no config itself (`init torch-config`) finds the
  installed package's configs in `configs/`, as written by
  `init torch-config --shipped NAME`.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SKIP = "skip"
FULL = "full"
FILE = "file"
CHECKOUT = "checkout"
COMPONENTS_CONFIG = "components-config"
MARKERS = (SKIP, FULL, FILE, CHECKOUT, COMPONENTS_CONFIG)
SHELL = ("sh", "bash", "shell", "console")
# Commands that only make sense in a checkout of the repository.
REPO_TOOL = re.compile(r"^(?:\S+=\S+\s+)*(?:flock \S+\s+)?(?:make\b|\S*python\S* (?:bench|scripts)/)|(?:^|\s)\.venv(?:/|\s|$)|\.\./shared/")
# Written by others at the same time as the user docs; links to them are
# checked only once they exist.
OPTIONAL_LINK_TARGETS = {"docs/benchmarks.md", "docs/experiments.md", "docs/shim-overhead.md"}
BLOCK_TIMEOUT = 600  # seconds for one shell block (the packaging one installs torch)


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # 1-based line of the first code line in the file
    marker: Optional[str]
    argument: str  # the marker's text after its kind


def fenced_blocks(path: Path) -> List[Block]:
    lines = path.read_text(encoding="utf8").splitlines()
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match.group(1), match.group(2).lower()
        previous = next((l.strip() for l in reversed(lines[:i]) if l.strip()), "")
        found = re.match(r"^<!-- test: ([\w-]+)\s*(.*?)\s*-->", previous)
        marker, argument = (found.group(1), found.group(2)) if found else (None, "")
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = [l[len(indent):] if l.startswith(indent) else l for l in lines[start:i]]
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, marker, argument))
        i += 1
    return blocks


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def shell_commands(code: str) -> List[str]:
    """The commands of a shell block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def is_repo_tool(block: Block) -> bool:
    commands = shell_commands(block.code)
    return bool(commands) and all(REPO_TOOL.search(c) for c in commands)


def makefile_targets() -> set:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", read(ROOT / "Makefile"), flags=re.M))


def check_repo_tool(block: Block, where: str) -> None:
    for command in shell_commands(block.code):
        for target in re.findall(r"\bmake ([a-z][\w-]*)", command):
            assert target in makefile_targets(), f"{where}: no make target {target!r}"
        for name in re.findall(r"(?<![\w/.-])((?:bench|scripts)/[\w./-]*\.py)", command):
            assert (ROOT / name).exists(), f"{where}: {name} does not exist"


def check_quick_variant(full: Block, quick: Optional[Block], where: str) -> None:
    """The quick variant is the full run's commands with `--training.*`
    options added."""
    assert quick is not None and quick.lang in SHELL, f"{where}: a `full` block needs its quick variant after it"
    full_commands, quick_commands = shell_commands(full.code), shell_commands(quick.code)
    assert len(full_commands) == len(quick_commands), (where, full_commands, quick_commands)
    for long, short in zip(full_commands, quick_commands):
        long_args, short_args = shlex.split(long), shlex.split(short)
        extra = short_args[len(long_args):]
        assert short_args[: len(long_args)] == long_args and extra, f"{where}: {short!r} is not {long!r} plus options"
        assert all(a.startswith("--training.") for a in extra[::2]), f"{where}: the quick variant may only add --training.* options: {extra}"


def user_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env.pop("PYTHONPATH", None)
    env.setdefault("OMP_NUM_THREADS", "1")  # the test suite runs on small shared machines
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_shell(code: str, cwd: Path, where: str) -> None:
    try:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code],
            cwd=str(cwd),
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{where}: timed out after {BLOCK_TIMEOUT}s\n{err.stdout}\n{err.stderr}")
    if result.returncode != 0:
        pytest.fail(
            f"{where}: exit {result.returncode}\n{code}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-4000:]}"
        )


def copy_checkout(dest: Path) -> Path:
    """The repository's files (what `git clone` gives), without the
    environment, build outputs and caches."""
    if not dest.exists():
        ignore = shutil.ignore_patterns(".venv", ".git", "training", "build", "dist", "*.egg-info", "__pycache__", "results")
        shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def write_shipped_configs(dest: Path) -> None:
    """The installed package's configs, as `init torch-config --shipped` writes them."""
    dest.mkdir(exist_ok=True)
    for entry in resources.files("spacy_pytorch_shim.configs").iterdir():
        if entry.name.endswith(".cfg"):
            (dest / entry.name).write_text(entry.read_text(encoding="utf8"), encoding="utf8")


@pytest.fixture
def doc_workdir(tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert not workdir.resolve().is_relative_to(ROOT)
    (workdir / "data").symlink_to(ROOT / "data", target_is_directory=True)
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))  # modules the docs write, e.g. for --code
    return workdir


def build_components_config(text: str) -> None:
    import spacy
    from thinc.api import Config

    names = re.findall(r"^\[components\.([^.\]]+)\]", text, flags=re.M)
    assert names, "a components-config block needs [components.NAME] sections"
    header = '[nlp]\nlang = "en"\npipeline = [%s]\n\n[components]\n\n' % ", ".join(
        f'"{name}"' for name in dict.fromkeys(names)
    )
    nlp = spacy.util.load_model_from_config(Config().from_str(header + text), auto_fill=True)
    assert nlp.pipe_names == list(dict.fromkeys(names))


def run_page(path: Path, workdir: Path) -> int:
    """Run every block of a page in order; the number of blocks run."""
    blocks = fenced_blocks(path)
    if "init torch-config" not in read(path):
        write_shipped_configs(workdir / "configs")
    namespace: Dict = {"__name__": f"__doc_{path.stem.replace('-', '_')}__"}
    ran = 0
    for i, block in enumerate(blocks):
        where = f"{doc_id(path)}:{block.line}"
        assert block.marker in (None, *MARKERS), f"{where}: unknown marker <!-- test: {block.marker} -->"
        if block.marker == SKIP:
            assert block.argument, f"{where}: a skip marker needs a reason"
            continue
        if block.marker == FILE:
            assert block.argument, f"{where}: `file` needs a file name"
            (workdir / block.argument).write_text(block.code, encoding="utf8")
        if block.lang == "ini" and block.marker == COMPONENTS_CONFIG:
            build_components_config(block.code)
        elif block.lang in ("python", "py"):
            # Padding keeps the doc's own line numbers in tracebacks.
            exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), namespace)
        elif block.lang in SHELL:
            if block.marker == FULL:
                check_quick_variant(block, blocks[i + 1] if i + 1 < len(blocks) else None, where)
                continue
            if is_repo_tool(block):
                check_repo_tool(block, where)
                continue
            cwd = copy_checkout(workdir.parent / "spacy-pytorch-shim") if block.marker == CHECKOUT else workdir
            run_shell(block.code, cwd, where)
        elif block.marker != FILE:
            continue  # config fragments and signatures
        ran += 1
    return ran


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_page_runs_as_written(path: Path, doc_workdir: Path):
    if not run_page(path, doc_workdir):
        pytest.skip(f"no runnable blocks in {doc_id(path)}")


def test_skips_are_rare():
    skipped = [(doc_id(p), b.line, b.argument) for p in DOC_FILES for b in fenced_blocks(p) if b.marker == SKIP]
    assert len(skipped) <= 12, skipped


def read(path: Path) -> str:
    return path.read_text(encoding="utf8")


def test_readme_make_targets_exist():
    targets = set(re.findall(r"\bmake ([a-z][\w-]*)", read(ROOT / "README.md")))
    assert {"demo", "test", "bench", "bench-quick", "bench-shim", "grid"} <= targets
    missing = targets - makefile_targets()
    assert not missing, f"README.md names make targets the Makefile lacks: {sorted(missing)}"


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_named_repo_files_exist(path: Path):
    text = read(path)
    named = set(re.findall(r"(?<![\w/.-])((?:configs|data|scripts|bench)/[\w./-]*\w)", text))
    named = {n for n in named if "<" not in n and "*" not in n}
    missing = sorted(n for n in named if not (ROOT / n).exists() and not n.startswith("bench/results"))
    assert not missing, f"{doc_id(path)} names files that do not exist: {missing}"


def test_benchmark_results_come_from_one_file():
    """docs/benchmarks.md's results table is what bench/report.py makes of
    docs/benchmarks-results.json, the file its plot is drawn from too."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    summary = json.loads(read(ROOT / "docs" / "benchmarks-results.json"))
    assert report.comparison_table(summary) in read(ROOT / "docs" / "benchmarks.md")


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_local_links_resolve(path: Path):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(path)):
        if re.match(r"^[a-z]+:", target):
            continue
        resolved = (path.parent / target).resolve()
        relative = os.path.relpath(resolved, ROOT)
        if relative in OPTIONAL_LINK_TARGETS and not resolved.exists():
            continue
        assert resolved.exists(), f"{doc_id(path)} links to missing {target}"


def parse_value(value):
    import srsly

    try:
        return srsly.json_loads(value)
    except ValueError:
        return value


def spacy_train_commands(text: str) -> List[List[str]]:
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    return [shlex.split(line) for line in re.findall(r"python -m spacy train [^\n`]*", joined)]


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_spacy_train_commands_build(path: Path):
    """Also the long runs, which are not run: their configs and data exist and
    the config builds with their overrides."""
    from spacy.util import load_config, load_model_from_config

    commands = spacy_train_commands(read(path))
    if not commands:
        pytest.skip("no spacy train commands")
    for args in commands:
        config_path = ROOT / args[4]
        options = {}
        rest = args[5:]
        while rest:
            key = rest.pop(0)
            assert key.startswith("--"), (key, args)
            options[key[2:]] = rest.pop(0) if rest and not rest[0].startswith("--") else True
        overrides = {k: parse_value(v) for k, v in options.items() if "." in k}
        for key in ("paths.train", "paths.dev"):
            data_path = ROOT / overrides[key]
            if overrides[key].startswith("../shared/") and not (ROOT / "../shared").exists():
                pytest.skip(f"{doc_id(path)} trains on {overrides[key]}: ../shared is absent")
            assert data_path.exists(), (key, args)
        if "code" in options or not args[4].startswith("configs/"):
            continue  # a config the page writes (run by test_page_runs_as_written)
        assert config_path.exists(), args
        config = load_config(config_path, overrides=overrides, interpolate=False)
        nlp = load_model_from_config(config, auto_fill=True)
        assert nlp.pipe_names, args
