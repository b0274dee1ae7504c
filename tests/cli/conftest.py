"""Shared fixtures for the end-to-end CLI tests: tiny DocBins cut from the
shipped samples, a helper that runs `python -m spacy ...` in a subprocess,
and the five ready configs trained for a few steps (once per session, two
trainings at a time)."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
DATA = ROOT / "data"

# config name -> (sample, score keys that `spacy evaluate` must report)
CONFIG_DATA: Dict[str, tuple] = {
    "ner": ("btc-sample", ["ents_f", "ents_p", "ents_r", "ents_per_type"]),
    "ner_accuracy": ("btc-sample", ["ents_f", "ents_p", "ents_r"]),
    "textcat": ("banking77-sample", ["cats_score", "cats_macro_auc", "cats_macro_f"]),
    "textcat_accuracy": ("banking77-sample", ["cats_score", "cats_macro_auc", "cats_macro_f"]),
    "textcat_multilabel": ("goemotions-sample", ["cats_macro_auc", "cats_macro_f", "cats_micro_f"]),
    "textcat_multilabel_accuracy": ("goemotions-sample", ["cats_macro_auc", "cats_macro_f", "cats_micro_f"]),
    "ner_spacy_tok2vec": ("btc-sample", ["ents_f", "ents_p", "ents_r"]),
    "torch_tok2vec_spacy_ner": ("btc-sample", ["ents_f", "ents_p", "ents_r"]),
}
# Docs per split in the tiny DocBins.
N_DOCS = {"train": 40, "dev": 20, "test": 20}
TRAIN_ARGS = ["--training.max_steps", "10", "--training.eval_frequency", "5"]
CLI_TIMEOUT = 240  # seconds for any one CLI call; a healthy one takes 4-15


def cli_env(threads: Optional[int] = 1) -> Dict[str, str]:
    """The environment for a child process. One torch thread by default: the
    tests run two children at a time on small machines."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONHASHSEED", "0")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    args: Sequence[str],
    *,
    timeout: float = CLI_TIMEOUT,
    cwd: Optional[Path] = None,
    python: Optional[str] = None,
    threads: Optional[int] = 1,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """`python -m spacy *args`; on failure the assertion shows the output."""
    cmd = [python or sys.executable, "-m", "spacy", *map(str, args)]
    return run_cmd(cmd, timeout=timeout, cwd=cwd, threads=threads, check=check)


def run_cmd(
    cmd: Sequence[str],
    *,
    timeout: float = CLI_TIMEOUT,
    cwd: Optional[Path] = None,
    threads: Optional[int] = 1,
    check: bool = True,
) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    try:
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(cwd) if cwd else None,
            env=cli_env(threads),
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(
            f"timed out after {timeout}s: {' '.join(cmd)}\n"
            f"--- stdout\n{_text(err.stdout)[-4000:]}\n--- stderr\n{_text(err.stderr)[-4000:]}"
        )
    if check and result.returncode != 0:
        pytest.fail(
            f"exit {result.returncode}: {' '.join(cmd)}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf8", "replace") if isinstance(data, bytes) else data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Dict[str, Dict[str, Path]]:
    """{sample: {split: path}}: the first docs of each split of each sample."""
    import spacy
    from spacy.tokens import DocBin

    out = tmp_path_factory.mktemp("tiny_data")
    nlp = spacy.blank("en")
    paths: Dict[str, Dict[str, Path]] = {}
    for sample in sorted({sample for sample, _ in CONFIG_DATA.values()}):
        paths[sample] = {}
        for split, n in N_DOCS.items():
            docs = list(DocBin().from_disk(DATA / sample / f"{split}.spacy").get_docs(nlp.vocab))[:n]
            assert len(docs) == n
            path = out / f"{sample}-{split}.spacy"
            DocBin(docs=docs).to_disk(path)
            paths[sample][split] = path
    return paths


def train_args(config, data: Dict[str, Path], output: Path, extra: Sequence[str] = ()) -> List[str]:
    """`spacy train` arguments for a config name in configs/ or a config path."""
    config_path = config if isinstance(config, Path) else CONFIGS / f"{config}.cfg"
    return [
        "train",
        config_path,
        "--output", output,
        "--paths.train", data["train"],
        "--paths.dev", data["dev"],
        *TRAIN_ARGS,
        *extra,
    ]


@pytest.fixture(scope="session")
def trained(tiny_data, tmp_path_factory) -> Dict[str, tuple]:
    """Every config in CONFIG_DATA trained with `spacy train` for 10 steps,
    then its model-best scored with `spacy evaluate` on the tiny test split:
    {config: (output directory, train result, evaluate result or None,
    scores path)}. Runs two configs at a time. A failed command is reported
    by the tests that use it, with the CLI's output."""
    out = tmp_path_factory.mktemp("trained")

    def train_and_evaluate(config: str):
        data = tiny_data[CONFIG_DATA[config][0]]
        output = out / config
        train = run_cli(train_args(config, data, output), check=False)
        evaluate = None
        scores = out / f"{config}-scores.json"
        if train.returncode == 0:
            evaluate = run_cli(
                ["evaluate", output / "model-best", data["test"], "--output", scores], check=False
            )
        return config, (output, train, evaluate, scores)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(train_and_evaluate, list(CONFIG_DATA)))


@pytest.fixture(scope="session")
def config_checks(tiny_data, tmp_path_factory) -> Dict[tuple, subprocess.CompletedProcess]:
    """`spacy debug config` and `spacy init fill-config` for every config,
    two at a time: {(command, config): result}. fill-config writes to a temp
    file, the last of the result's args."""
    tmp = tmp_path_factory.mktemp("fill_config")
    jobs = []
    for config, (sample, _) in CONFIG_DATA.items():
        data = tiny_data[sample]
        path = CONFIGS / f"{config}.cfg"
        jobs.append((("debug", config), ["debug", "config", path, "--paths.train", data["train"], "--paths.dev", data["dev"]]))
        jobs.append((("fill", config), ["init", "fill-config", path, tmp / f"{config}.cfg"]))

    def run(job):
        key, args = job
        return key, run_cli(args, check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, jobs))


def check_ok(result: Optional[subprocess.CompletedProcess], what: str) -> subprocess.CompletedProcess:
    if result is None:
        pytest.fail(f"{what}: not run (an earlier step failed)")
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {' '.join(map(str, result.args))}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def trained_pipeline(trained, config: str) -> Path:
    output, train, _, _ = trained[config]
    check_ok(train, f"spacy train for configs/{config}.cfg")
    return output


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf8"))


class CLIHelpers:
    """The helpers above, for the test modules (a conftest is not importable
    by name when several folders have one)."""

    ROOT = ROOT
    CONFIGS = CONFIGS
    DATA = DATA
    CONFIG_DATA = CONFIG_DATA
    TRAIN_ARGS = TRAIN_ARGS
    run = staticmethod(run_cli)
    run_cmd = staticmethod(run_cmd)
    env = staticmethod(cli_env)
    train_args = staticmethod(train_args)
    read_json = staticmethod(read_json)
    trained_pipeline = staticmethod(trained_pipeline)
    check_ok = staticmethod(check_ok)


@pytest.fixture(scope="session")
def cli() -> CLIHelpers:
    return CLIHelpers()
