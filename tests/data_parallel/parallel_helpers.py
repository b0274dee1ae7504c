"""Helpers of the data-parallel tests: the child environment, CLI runs with
a timeout, tiny DocBins, configs for the equality runs, torch weights."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest
import torch

from callbacks import pipeline_weights  # noqa: F401  (for the tests)

ROOT = Path(__file__).resolve().parents[2]
CALLBACKS = Path(__file__).with_name("callbacks.py")
TIMEOUT = 180  # seconds for any one run; a healthy one takes 5-15


def launcher_env() -> Dict[str, str]:
    """One torch thread per process: two ranks share small machines."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_spacy(args: Sequence, *, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m spacy *args`; a hang fails the test after `timeout`."""
    cmd = [sys.executable, "-m", "spacy", *map(str, args)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=launcher_env(), cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{err.stdout}\n{err.stderr}")
    if check and result.returncode != 0:
        pytest.fail(f"exit {result.returncode}: {' '.join(cmd)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def assert_close(ours: Dict[str, torch.Tensor], reference: Dict[str, torch.Tensor], rtol: float) -> None:
    """Every tensor within `rtol` of the reference, relative to its norm."""
    assert ours.keys() == reference.keys()
    for key, ref in reference.items():
        diff = float((ours[key].double() - ref.double()).norm())
        assert diff <= rtol * float(ref.double().norm()) + 1e-12, (key, diff, float(ref.norm()))
