"""The documentation runs: every ```python block in README.md and docs/*.md is
executed, and every config, data file, make target and local link it names
exists.

* Each file's python blocks run in order in one namespace, in a fresh
  temporary working directory that holds links to the repo's `configs/` and
  `data/`, so the docs can use the shipped samples by their relative paths.
* A block preceded by the line `<!-- test: skip -->` (optionally with a
  reason: `<!-- test: skip (needs a trained pipeline) -->`) is not run (for blocks
  that need a trained pipeline on disk or long training).
* An ```ini block preceded by `<!-- test: components-config -->` holds
  `[components.NAME]` sections: it is built into a pipeline (after the python
  blocks above it ran, so architectures they register are known).
* Every `python -m spacy train CFG ...` command is checked: its config, its
  `--paths.*` files and `--code` files exist (code files may be written by the
  doc itself), and the config builds a pipeline with those overrides.
"""
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
# Markers: an HTML comment on the line before a block, `<!-- test: KIND ... -->`
# (anything after KIND is a free-text reason).
SKIP = "skip"
COMPONENTS_CONFIG = "components-config"
# Written by others at the same time as the user docs; links to them are
# checked only once they exist.
OPTIONAL_LINK_TARGETS = {"docs/benchmarks.md", "docs/experiments.md", "docs/shim-overhead.md"}


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # 1-based line of the first code line in the file
    marker: Optional[str]


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
        found = re.match(r"^<!-- test: ([\w-]+)", previous)
        marker = found.group(1) if found else None
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = [l[len(indent):] if l.startswith(indent) else l for l in lines[start:i]]
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, marker))
        i += 1
    return blocks


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture
def doc_workdir(tmp_path, monkeypatch):
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # modules the docs write, e.g. for --code
    return tmp_path


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


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_python_blocks_run(path: Path, doc_workdir: Path):
    blocks = fenced_blocks(path)
    namespace: Dict = {"__name__": f"__doc_{path.stem.replace('-', '_')}__"}
    ran = 0
    for block in blocks:
        assert block.marker in (None, SKIP, COMPONENTS_CONFIG), (
            f"{doc_id(path)}:{block.line - 1}: unknown marker <!-- test: {block.marker} -->"
        )
        if block.marker == SKIP:
            continue
        if block.lang == "ini" and block.marker == COMPONENTS_CONFIG:
            build_components_config(block.code)
            ran += 1
        elif block.lang in ("python", "py"):
            # Padding keeps the doc's own line numbers in tracebacks.
            code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
            exec(code, namespace)
            ran += 1
    if not ran:
        pytest.skip(f"no runnable blocks in {doc_id(path)}")


def test_skips_are_rare():
    skipped = [(doc_id(p), b.line) for p in DOC_FILES for b in fenced_blocks(p) if b.marker == SKIP]
    assert len(skipped) <= 6, skipped


def read(path: Path) -> str:
    return path.read_text(encoding="utf8")


def makefile_targets() -> set:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", read(ROOT / "Makefile"), flags=re.M))


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
    commands = []
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    return [shlex.split(line) for line in re.findall(r"python -m spacy train [^\n`]*", joined)]


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_spacy_train_commands_build(path: Path):
    import spacy
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
        if "code" in options:
            # The module is written by a block of the doc (checked there); here
            # only configs that need nothing else are built.
            continue
        assert config_path.exists(), args
        config = load_config(config_path, overrides=overrides, interpolate=False)
        nlp = load_model_from_config(config, auto_fill=True)
        assert nlp.pipe_names, args
