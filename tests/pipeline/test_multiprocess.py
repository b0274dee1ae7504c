"""`nlp.pipe(n_process=2)` with a TorchWrapper component: no hang, same
annotations as `n_process=1`, and flat memory on a long stream.

The multiprocess runs happen in a subprocess (this file run as a script) with
a timeout, so a deadlocked worker fails the test instead of blocking the
suite. The component is defined in that script's `__main__`, which only works
with the `fork` start method that spaCy uses on Linux; that is the case the
fork guard in `spacy_pytorch_shim.fork` has to keep working.

Without the guard, a parent that has used torch's OpenMP thread pool
deadlocks its forked workers on their first parallel torch op. That hang is
shown by `test_without_fork_guard_workers_hang`, which only runs when
SPACY_PYTORCH_SHIM_FORK_HANG_DEMO=1 (it costs its full timeout, and whether
it hangs depends on the OpenMP runtime and the thread count).
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import numpy
import pytest
import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc

from spacy_pytorch_shim import TorchWrapper
from spacy_pytorch_shim import fork

N_FEATURES = 64
LABELS = ["A", "B", "C", "D"]
FACTORY = "shim_test_torch_scorer"
WORDS = (
    "the a card payment was declined top up failed my transfer is pending "
    "why when how can I get refund exchange rate fee charged cash app"
).split()
CHILD_TIMEOUT = 90  # seconds; a healthy run of the child takes about 5


class TorchScorer:
    """Hashed bag-of-words features per token -> small MLP (TorchWrapper) ->
    a tag per token (`token.tag_`) and the mean of the token scores as
    `doc.cats`. Deterministic: fixed seed, features from `token.orth`."""

    def __init__(self, nlp: Language, name: str):
        self.name = name
        torch.manual_seed(0)
        module = torch.nn.Sequential(
            torch.nn.Linear(N_FEATURES, 256),
            torch.nn.Tanh(),
            torch.nn.Linear(256, len(LABELS)),
        )
        self.model = TorchWrapper(module)

    def _featurize(self, docs: List[Doc]) -> numpy.ndarray:
        X = numpy.zeros((sum(len(d) for d in docs), N_FEATURES), dtype="float32")
        i = 0
        for doc in docs:
            for token in doc:
                X[i, token.orth % N_FEATURES] = 1.0
                X[i, (token.orth // 7 + token.i) % N_FEATURES] += 0.5
                i += 1
        return X

    def _annotate(self, docs: List[Doc]) -> None:
        if not docs:
            return
        Y = self.model.predict(self.model.ops.asarray2f(self._featurize(docs)))
        start = 0
        for doc in docs:
            scores = Y[start : start + len(doc)]
            start += len(doc)
            for token, row in zip(doc, scores):
                token.tag_ = LABELS[int(row.argmax())]
            if len(doc):
                mean = scores.mean(axis=0)
                doc.cats = {label: float(mean[j]) for j, label in enumerate(LABELS)}

    def __call__(self, doc: Doc) -> Doc:
        self._annotate([doc])
        return doc

    def pipe(self, docs, batch_size: int = 128) -> Iterator[Doc]:
        for batch in spacy.util.minibatch(docs, batch_size):
            self._annotate(batch)
            yield from batch


@Language.factory(FACTORY)
def make_torch_scorer(nlp: Language, name: str) -> TorchScorer:
    return TorchScorer(nlp, name)


def make_nlp() -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe(FACTORY)
    return nlp


def make_texts(n: int, seed: int = 0) -> Iterator[str]:
    """Short texts over a fixed small vocabulary, so the StringStore does not
    grow along the stream."""
    rng = numpy.random.default_rng(seed)
    for _ in range(n):
        length = int(rng.integers(3, 12))
        yield " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), length))


def annotations(docs: List[Doc]) -> List[dict]:
    return [
        {"text": d.text, "tags": [t.tag_ for t in d], "cats": dict(d.cats)}
        for d in docs
    ]


def use_torch_thread_pool() -> None:
    """Run torch ops on several OpenMP threads, as any parent process that
    trained or evaluated a model before calling nlp.pipe has done."""
    torch.set_num_threads(2)
    a = torch.randn(1024, 1024)
    for _ in range(3):
        a @ a


def _child_main(guard: bool) -> None:
    if not guard:
        fork.remove_fork_guard()
    else:
        fork.install_fork_guard()
    nlp = make_nlp()
    use_torch_thread_pool()
    texts = list(make_texts(600, seed=1))
    one = annotations(list(nlp.pipe(texts, batch_size=64, n_process=1)))
    two = annotations(list(nlp.pipe(texts, batch_size=64, n_process=2)))
    print(json.dumps({"n1": one, "n2": two}))


def run_child(guard: bool, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    # own session, so that on a timeout the hung spaCy workers (grandchildren)
    # are killed with the child instead of being left behind
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "guard" if guard else "noguard"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_fork_guard_installed_on_import_and_idempotent():
    assert fork.fork_guard_active()
    fork.install_fork_guard()
    fork.install_fork_guard()
    assert fork.fork_guard_active()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_one_torch_thread():
    fork.install_fork_guard()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report the thread count, never return to pytest
            try:
                os.write(write, str(torch.get_num_threads()).encode())
            finally:
                os._exit(0)
        os.close(write)
        child_threads = int(os.read(read, 16).decode())
        os.close(read)
        os.waitpid(pid, 0)
        assert child_threads == 1
        assert torch.get_num_threads() == 2  # the parent keeps its setting
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method is Linux's default")
def test_pipe_n_process_2_no_hang_same_annotations():
    try:
        result = run_child(guard=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"nlp.pipe(n_process=2) did not finish in {CHILD_TIMEOUT}s: "
            "the forked workers deadlocked"
        )
    one, two = result["n1"], result["n2"]
    assert len(one) == len(two) == 600
    for a, b in zip(one, two):
        assert a["text"] == b["text"]
        assert a["tags"] == b["tags"]
        assert a["cats"].keys() == b["cats"].keys() == set(LABELS)
        for label in LABELS:
            # the parent runs 2 threads and the workers 1: sums may be
            # ordered differently, so allow rounding differences only
            assert a["cats"][label] == pytest.approx(b["cats"][label], rel=1e-5, abs=1e-6)


@pytest.mark.skipif(
    os.environ.get("SPACY_PYTORCH_SHIM_FORK_HANG_DEMO") != "1",
    reason="set SPACY_PYTORCH_SHIM_FORK_HANG_DEMO=1 to show the hang without the guard",
)
def test_without_fork_guard_workers_hang():
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(guard=False, timeout=20)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_long_stream_memory_flat():
    nlp = make_nlp()
    n = 20000
    checkpoints = {2000: 0, 11000: 0, n: 0}
    count = 0
    for doc in nlp.pipe(make_texts(n, seed=2), batch_size=256):
        assert doc.cats
        count += 1
        if count in checkpoints:
            checkpoints[count] = _rss_bytes()
    assert count == n
    # after warm-up, neither 9,000-doc stretch may grow the process by more
    # than a few MB. Measured here: about +-2 MB of allocator noise per
    # stretch; keeping every Doc alive adds about 40 MB per stretch, so the
    # limit catches any leak of roughly 1 KB per doc or more
    first = checkpoints[11000] - checkpoints[2000]
    second = checkpoints[n] - checkpoints[11000]
    mb = 1024 * 1024
    assert second < 8 * mb, (first / mb, second / mb)
    assert first < 16 * mb, (first / mb, second / mb)


if __name__ == "__main__":
    _child_main(guard=sys.argv[1] == "guard")
