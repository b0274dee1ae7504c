#!/usr/bin/env python
"""Benchmark harness: spaCy's CPU pipelines against ours, two presets each.

For each dataset it trains four systems for the same number of epochs on the
same data, in the same run, with the real CLI (``python -m spacy train`` in a
subprocess), once per seed (``--system.seed``):

* ``spacy-efficiency`` / ``spacy-accuracy``: ``python -m spacy init config -l en
  -p <pipe> -o efficiency|accuracy`` (CPU; the accuracy preset without static
  vectors: ``paths.vectors = null``, ``include_static_vectors = false``);
* ``ours-efficiency`` / ``ours-accuracy``: ``configs/<task>.cfg`` and
  ``configs/<task>_accuracy.cfg`` from the repository (a missing config is
  reported as "missing config"; the run carries on).

and then measures test scores (``python -m spacy evaluate``), training and
inference speed, peak memory (RSS) while training and while predicting, and
model size on disk against raw parameter bytes. Scores are reported as the
median over the seeds with their range. It writes
``<out>/<mode>/results.json``, ``report.md`` and ``score_vs_speed.png``.

Usage (see bench/README.md for the details of every measurement)::

    python bench/run_bench.py --quick
    python bench/run_bench.py                       # full mode, all 7 datasets, 3 seeds
    python bench/run_bench.py --datasets btc,trec6 --epochs 3 --seeds 0

The parent process deliberately imports neither spaCy nor torch: all heavy
work happens in subprocesses (``spacy train``, ``spacy evaluate`` and the
``_worker`` entry points of this file), so that each measurement starts from a
fresh interpreter.

This file is also passed to ``spacy train`` as ``--code``: on import (not as
``__main__``) it registers the logger ``bench.TimingLogger.v1``, a wrapper
around spaCy's console logger that times the training loop (updates, dev
evaluations and checkpoint saves separately) and writes the timings to the
JSON file named by the environment variable ``BENCH_TIMING_FILE``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"

# task -> spaCy pipe name for `init config -p`, our config per preset, main
# scores (the targets are on every one of them)
TASKS = {
    "ner": {"pipe": "ner", "main": ["ents_f"],
            "ours_cfg": {"efficiency": "configs/ner.cfg",
                         "accuracy": "configs/ner_accuracy.cfg"}},
    "textcat": {"pipe": "textcat", "main": ["cats_macro_f"],
                "ours_cfg": {"efficiency": "configs/textcat.cfg",
                             "accuracy": "configs/textcat_accuracy.cfg"}},
    "textcat_multilabel": {
        "pipe": "textcat_multilabel", "main": ["cats_macro_auc", "cats_macro_f"],
        "ours_cfg": {"efficiency": "configs/textcat_multilabel.cfg",
                     "accuracy": "configs/textcat_multilabel_accuracy.cfg"}},
}
DATASETS = {
    "btc": "ner",
    "wnut17": "ner",
    "ncbi_disease": "ner",
    "banking77": "textcat",
    "trec6": "textcat",
    "imdb": "textcat",
    "goemotions": "textcat_multilabel",
}
TASK_TITLES = {
    "ner": "Named entity recognition",
    "textcat": "Text classification, mutually exclusive labels",
    "textcat_multilabel": "Text classification, multi-label",
}
PRESETS = ["efficiency", "accuracy"]
# system name -> (side, preset); the order of every table and of the plot
SYSTEMS = {f"{side}-{preset}": (side, preset)
           for preset in PRESETS for side in ("spacy", "ours")}
# spaCy's accuracy preset names en_core_web_lg's vectors; the panel is scored
# without static vectors on both sides
SPACY_NO_VECTORS = {"paths.vectors": None,
                    "components.tok2vec.model.embed.include_static_vectors": False}

# Mode defaults. Full mode: the protocol of the targets (5 epochs, every doc
# except goemotions' train/dev caps, 3 seeds); see bench/README.md for the time
# it takes. Quick mode: a scaled protocol (subsampled data, one seed).
FULL = {
    "datasets": list(DATASETS),
    "epochs": 5,
    "seeds": [0, 1, 2],
    "train_limit": {"goemotions": 10000},
    "dev_limit": {"goemotions": 2000},
    "test_limit": {},
    "evals_per_epoch": 2,
    "train_timeout": 60 * 60,
}
QUICK = {
    "datasets": list(DATASETS),
    "epochs": 5,
    "seeds": [0],
    "train_limit": 2000,
    "dev_limit": 500,
    "test_limit": 1000,
    "evals_per_epoch": 2,
    "train_timeout": 20 * 60,
}

T0 = time.time()


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def log(msg: str) -> None:
    el = time.time() - T0
    print(f"[{int(el // 60):3d}m{int(el % 60):02d}s] {msg}", flush=True)


def qjoin(cmd: List[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def proc_status_kb(pid: int | str, key: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRSS(threading.Thread):
    """Polls /proc/<pid>/status of a child for VmHWM (its peak RSS).

    VmHWM is the high-water mark of the process's current address space, so
    it is monotonic and not inflated by the parent's memory (unlike
    ru_maxrss of a forked child, which inherits the parent's peak).
    """

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            hwm = proc_status_kb(self.pid, "VmHWM")
            if hwm:
                self.peak_kb = max(self.peak_kb, hwm)
            self._stop_evt.wait(self.interval)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        return self.peak_kb


def run_cmd(cmd: List[str], log_path: Path, timeout: Optional[float] = None,
            env: Optional[dict] = None, cwd: Optional[Path] = None) -> Dict[str, Any]:
    """Runs cmd with output to log_path; returns rc, wall time, peak RSS."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as logf:
        logf.write("$ " + qjoin(cmd) + "\n")
        logf.flush()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                             env=env, cwd=str(cwd or REPO))
        poller = PeakRSS(p.pid)
        poller.start()
        load0 = os.getloadavg()[0]
        timed_out = False
        deadline = t + timeout if timeout else None
        term_at = None
        while True:
            # wait4 gives this child's own CPU time (user + sys)
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if deadline and now > deadline and term_at is None:
                timed_out = True
                term_at = now
                # SIGINT: KeyboardInterrupt, so spacy train's `finally` saves
                # model-last; model-best is whatever the last dev evaluation kept
                p.send_signal(signal.SIGINT)
            elif term_at is not None and now > term_at + 60:
                p.kill()
            time.sleep(0.05)
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        peak = poller.stop()
    return {"rc": rc, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mb": peak / 1024 if peak else None, "timed_out": timed_out,
            "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "log": rel(log_path)}


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def child_env(threads: Optional[int]) -> dict:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
        env["BENCH_TORCH_THREADS"] = str(threads)
    return env


def worker(name: str, args: dict, log_path: Path, env: dict,
           timeout: Optional[float] = None) -> Dict[str, Any]:
    """Runs `python bench/run_bench.py _worker NAME JSON` and reads its JSON."""
    out_json = log_path.with_suffix(".json")
    if out_json.exists():
        out_json.unlink()
    args = dict(args, _out=str(out_json))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", name, json.dumps(args)]
    res = run_cmd(cmd, log_path, timeout=timeout, env=env)
    if res["rc"] != 0 or not out_json.exists():
        raise RuntimeError(f"worker {name} failed (rc={res['rc']}), see {rel(log_path)}:\n"
                           + tail(log_path))
    data = json.loads(out_json.read_text())
    data["_proc"] = res
    return data


# --------------------------------------------------------------------------
# workers (run in fresh subprocesses)
# --------------------------------------------------------------------------
def _vm_hwm_mb() -> Optional[float]:
    kb = proc_status_kb("self", "VmHWM")
    return kb / 1024 if kb else None


def w_prepare(a: dict) -> dict:
    """Counts docs/words of every split; writes subsampled DocBins if asked."""
    import random
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    out: Dict[str, Any] = {}
    for split in ("train", "dev", "test"):
        src = Path(a["src"][split])
        docs = list(DocBin().from_disk(src).get_docs(nlp.vocab))
        info = {"source": str(src), "source_docs": len(docs),
                "source_words": sum(len(d) for d in docs)}
        limit = a["limits"].get(split)
        if limit and limit < len(docs):
            rng = random.Random(a.get("seed", 0))
            idx = sorted(rng.sample(range(len(docs)), limit))
            docs = [docs[i] for i in idx]
            dst = Path(a["dst"][split])
            dst.parent.mkdir(parents=True, exist_ok=True)
            DocBin(docs=docs, store_user_data=True).to_disk(dst)
            info["path"] = str(dst)
            info["subsampled"] = True
        else:
            info["path"] = str(src)
            info["subsampled"] = False
        info["docs"] = len(docs)
        info["words"] = sum(len(d) for d in docs)
        out[split] = info
    return out


def w_spacy_config(a: dict) -> dict:
    """spaCy's own config, as `spacy init config -l en -p PIPE -o OPTIMIZE`
    writes it (CPU), with the overrides `a["set"]` (dotted keys) applied."""
    from spacy.cli.init_config import init_config
    from thinc.api import Config

    cfg = init_config(lang="en", pipeline=[a["pipe"]], optimize=a["optimize"], gpu=False)
    cfg = Config(cfg)
    for key, value in a["set"].items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"{key} is not in spaCy's {a['optimize']} config for {a['pipe']}")
        node[leaf] = value
    cfg.to_disk(a["path"])
    return {"path": a["path"]}


def w_steps(a: dict) -> dict:
    """Number of optimizer steps per epoch that the config's batcher makes."""
    import spacy
    from spacy.training import Corpus
    from spacy.util import load_config, registry

    cfg = load_config(a["config"], overrides={"paths.train": a["train"], "paths.dev": a["dev"]},
                      interpolate=True)
    batcher = registry.resolve({"b": cfg["training"]["batcher"]})["b"]
    nlp = spacy.blank(cfg["nlp"].get("lang", "en"))
    examples = list(Corpus(a["train"])(nlp))
    import random
    random.seed(0)
    steps = []
    for _ in range(a["epochs"]):
        random.shuffle(examples)
        steps.append(sum(1 for _ in batcher(examples)))
    return {"steps_per_epoch": steps, "total_steps": sum(steps)}


def _param_bytes(nlp) -> dict:
    thinc_bytes = 0
    torch_bytes = 0
    n_shims = 0
    seen_nodes, seen_shims = set(), set()
    per_component = {}
    for name, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if model is None or not hasattr(model, "walk"):
            continue
        c_thinc = c_torch = 0
        for node in model.walk():
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            for pname in node.param_names:
                if node.has_param(pname):
                    c_thinc += int(node.get_param(pname).nbytes)
            for shim in getattr(node, "shims", []):
                if id(shim) in seen_shims:
                    continue
                seen_shims.add(id(shim))
                tm = getattr(shim, "_model", None)
                if tm is not None and hasattr(tm, "state_dict"):
                    n_shims += 1
                    c_torch += sum(t.numel() * t.element_size()
                                   for t in tm.state_dict().values())
        per_component[name] = {"thinc_param_bytes": c_thinc, "torch_state_bytes": c_torch}
        thinc_bytes += c_thinc
        torch_bytes += c_torch
    return {"thinc_param_bytes": thinc_bytes, "torch_state_bytes": torch_bytes,
            "param_bytes": thinc_bytes + torch_bytes, "n_torch_shims": n_shims,
            "per_component": per_component}


def _set_torch_threads() -> Optional[int]:
    """torch's thread count from BENCH_TORCH_THREADS (--threads), if torch is
    installed: the number of threads it will use."""
    threads = os.environ.get("BENCH_TORCH_THREADS")
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _passes_per_run(t_pass: float, a: dict) -> int:
    """Passes over the test texts per timed run, so that a run lasts at least
    min_run_s (small test sets: timer noise)."""
    return max(1, min(100, math.ceil(a.get("min_run_s", 0.5) / max(t_pass, 1e-6))))


def w_predict(a: dict) -> dict:
    """Loads a model, counts parameter bytes, times nlp.pipe on the test texts
    (warm-up, then median of N runs) and computes exclusive-class accuracy."""
    t_start = time.perf_counter()
    import spacy
    from spacy.tokens import DocBin

    torch_threads = _set_torch_threads()
    nlp = spacy.load(a["model"])
    t_loaded = time.perf_counter()
    rss_after_load = _vm_hwm_mb()
    gold = list(DocBin().from_disk(a["test"]).get_docs(nlp.vocab))
    texts = [d.text for d in gold]
    bs = a["batch_size"]
    warm = texts[: max(bs * 2, 1)]
    for _ in nlp.pipe(warm, batch_size=bs):
        pass
    # one untimed full pass; small test sets are passed over several times per
    # timed run so that each run lasts at least min_run_s (timer noise)
    t = time.perf_counter()
    docs = list(nlp.pipe(texts, batch_size=bs))
    t_pass = time.perf_counter() - t
    reps = _passes_per_run(t_pass, a)
    words = reps * sum(len(d) for d in docs)
    runs = []
    for _ in range(a["runs"]):
        t = time.perf_counter()
        for _ in range(reps):
            docs = list(nlp.pipe(texts, batch_size=bs))
        runs.append(time.perf_counter() - t)
    med = statistics.median(runs)
    out = {
        "n_texts": len(texts), "words": words, "passes_per_run": reps,
        "batch_size": bs, "runs_s": runs, "median_s": med,
        "wps_runs": [words / r for r in runs],
        "wps": words / med, "torch_threads": torch_threads,
        "load_s": t_loaded - t_start, "rss_after_load_mb": rss_after_load,
    }
    if a["task"] in ("textcat", "textcat_multilabel"):
        correct = n = 0
        for g, p in zip(gold, docs):
            if not g.cats:
                continue
            n += 1
            if p.cats and max(p.cats, key=p.cats.get) == max(g.cats, key=g.cats.get):
                correct += 1
        out["accuracy"] = correct / n if n else None
        out["accuracy_n"] = n
    out["params"] = _param_bytes(nlp)
    out["peak_rss_mb"] = _vm_hwm_mb()
    return out


def w_devscore(a: dict) -> dict:
    """Weighted dev score (training.score_weights, as spacy train computes it)
    of each given model directory."""
    import spacy
    from spacy.training import Corpus

    res = {}
    for key, path in a["models"].items():
        nlp = spacy.load(path)
        weights = {k: v for k, v in nlp.config["training"]["score_weights"].items()
                   if v is not None}
        scores = nlp.evaluate(Corpus(a["dev"])(nlp))
        scores = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
        res[key] = {"score": sum(scores.get(k, 0.0) * w for k, w in weights.items()),
                    "scores": {k: scores[k] for k in weights if k in scores}}
    return res


def w_speed(a: dict) -> dict:
    """Inference words/s of several models timed in one process, interleaved:
    each round times every model once, starting from a different one each
    round, so that a change of load on a shared machine falls on all of them
    alike (each system's own predict run is timed minutes apart from the
    others'). The garbage collector is off during a timed run: with several
    pipelines loaded, its full collections otherwise slow whichever runs last."""
    import gc

    import spacy
    from spacy.tokens import DocBin

    _set_torch_threads()
    nlps = {name: spacy.load(path) for name, path in a["models"].items()}
    first = next(iter(nlps.values()))
    texts = [d.text for d in DocBin().from_disk(a["test"]).get_docs(first.vocab)]
    bs = a["batch_size"]
    words, reps = {}, {}
    for name, nlp in nlps.items():  # a warm-up pass, then one timed to size the runs
        words[name] = sum(len(doc) for doc in nlp.pipe(texts, batch_size=bs))
        t = time.perf_counter()
        for _ in nlp.pipe(texts, batch_size=bs):
            pass
        reps[name] = _passes_per_run(time.perf_counter() - t, a)
    names = list(nlps)
    runs: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(a["runs"]):
        for name in names[r % len(names):] + names[: r % len(names)]:
            gc.collect()
            gc.disable()
            t = time.perf_counter()
            for _ in range(reps[name]):
                for _ in nlps[name].pipe(texts, batch_size=bs):
                    pass
            runs[name].append(time.perf_counter() - t)
            gc.enable()
    return {name: {"wps": words[name] * reps[name] / statistics.median(runs[name]),
                   "runs_s": runs[name], "passes_per_run": reps[name]} for name in names}


WORKERS = {"prepare": w_prepare, "spacy_config": w_spacy_config, "steps": w_steps, "predict": w_predict,
           "devscore": w_devscore, "speed": w_speed}


def worker_main(name: str, args_json: str) -> None:
    a = json.loads(args_json)
    out = WORKERS[name](a)
    Path(a["_out"]).write_text(json.dumps(out, indent=1))


# --------------------------------------------------------------------------
# the timing logger, registered when spacy train imports this file (--code)
# --------------------------------------------------------------------------
def _register_timing_logger() -> None:
    from spacy.training.loggers import console_logger_v3
    from spacy.util import registry

    @registry.loggers("bench.TimingLogger.v1")
    def timing_logger(progress_bar=None, console_output=True, output_file=None):
        if progress_bar is False:
            progress_bar = None
        elif progress_bar is True:
            progress_bar = "eval"
        base = console_logger_v3(progress_bar=progress_bar, console_output=console_output,
                                 output_file=output_file)

        def setup(nlp, stdout=sys.stdout, stderr=sys.stderr):
            log_step, finalize = base(nlp, stdout, stderr)
            path = os.environ.get("BENCH_TIMING_FILE")
            st = {"update_s": 0.0, "update_words": 0, "n_updates": 0, "eval_s": 0.0,
                  "n_evals": 0, "save_s": 0.0, "n_saves": 0, "n_steps": 0,
                  "loop_s": 0.0, "evals": []}
            t0 = time.perf_counter()
            orig_update, orig_eval, orig_save = nlp.update, nlp.evaluate, nlp.to_disk

            def update(examples, *args, **kwargs):
                examples = list(examples)
                t = time.perf_counter()
                r = orig_update(examples, *args, **kwargs)
                st["update_s"] += time.perf_counter() - t
                st["update_words"] += sum(len(eg) for eg in examples)
                st["n_updates"] += 1
                return r

            def timed(method, seconds_key, count_key):
                def call(*args, **kwargs):
                    t = time.perf_counter()
                    r = method(*args, **kwargs)
                    st[seconds_key] += time.perf_counter() - t
                    st[count_key] += 1
                    return r

                return call

            nlp.update = update
            nlp.evaluate = timed(orig_eval, "eval_s", "n_evals")
            nlp.to_disk = timed(orig_save, "save_s", "n_saves")

            def dump():
                if path:
                    st["peak_rss_mb"] = _vm_hwm_mb()
                    Path(path).write_text(json.dumps(st, indent=1))

            def step(info):
                st["n_steps"] += 1
                st["loop_s"] = time.perf_counter() - t0
                if info is not None:
                    st["evals"].append({"epoch": info["epoch"], "step": info["step"],
                                        "score": info["score"], "words": info["words"],
                                        "t": st["loop_s"]})
                    dump()
                log_step(info)

            def fin():
                finalize()
                dump()

            return step, fin

        return setup


if __name__ != "__main__":
    try:
        _register_timing_logger()
    except ImportError:  # imported outside an environment with spaCy
        pass


# --------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------
def read_logger_block(cfg_path: Path) -> Optional[dict]:
    """The [training.logger] block of a config, read as plain INI text."""
    import configparser

    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    cp.optionxform = str
    try:
        cp.read(cfg_path)
        if cp.has_section("training.logger"):
            return {k: v.strip().strip('"') for k, v in cp.items("training.logger")}
    except configparser.Error:
        return None
    return None


def can_wrap_logger(cfg_path: Path) -> bool:
    block = read_logger_block(cfg_path)
    if not block:
        return False
    if not block.get("@loggers", "").startswith("spacy.ConsoleLogger"):
        return False
    return set(block) <= {"@loggers", "progress_bar", "console_output", "output_file"}


def machine_info() -> dict:
    model = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "usable_cores": usable,
            "mem_total_gib": mem, "platform": platform.platform(),
            "hostname": platform.node()}


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("spacy", "thinc", "torch", "numpy", "spacy-pytorch-shim"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO,
                                           capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        out["git_dirty"] = bool(dirty)
    except OSError:
        pass
    return out


def pick_scores(task: str, scores: dict) -> dict:
    if task == "ner":
        keys = ["ents_f", "ents_p", "ents_r"]
    elif task == "textcat":
        keys = ["cats_score", "cats_macro_f", "cats_micro_f", "cats_macro_auc"]
    else:
        keys = ["cats_macro_f", "cats_macro_auc", "cats_micro_f", "cats_score"]
    out = {k: scores.get(k) for k in keys}
    if task == "ner" and isinstance(scores.get("ents_per_type"), dict):
        out["ents_per_type"] = scores["ents_per_type"]
    return out


def run_system(ds: str, task: str, system: str, cfg: Path, data: dict, epochs: int,
               seed: int, a: argparse.Namespace, sys_dir: Path, env: dict) -> dict:
    """Train, select, evaluate and measure one system on one dataset with one seed."""
    res: Dict[str, Any] = {"system": system, "seed": seed, "config": rel(cfg), "status": "ok",
                           "commands": []}
    if not cfg.exists():
        res["status"] = "missing config"
        log(f"{ds} / {system}: missing config {rel(cfg)}, skipped")
        return res
    res["config_sha256"] = sha256(cfg)
    train_p, dev_p, test_p = (data[s]["path"] for s in ("train", "dev", "test"))
    fingerprint = {"dataset": ds, "epochs": epochs, "seed": seed,
                   "config_sha256": res["config_sha256"],
                   "data": {s: [data[s]["path"], data[s]["docs"]] for s in data},
                   "batch_size": a.batch_size, "evals_per_epoch": a.evals_per_epoch,
                   "threads": a.threads,
                   "versions": {k: v for k, v in a._versions.items() if not k.startswith("git")}}
    cache = sys_dir / "result.json"
    if a.reuse and cache.exists():
        old = json.loads(cache.read_text())
        # A run stopped at the time limit is reused too when it had at least
        # this run's limit: run again, it would stop at the same point or earlier.
        timed_out = str(old.get("status", "")).startswith("timeout") and \
            (_get(old, "train", "wall_s") or 0) >= a.train_timeout
        if old.get("fingerprint") == fingerprint and (old.get("status") == "ok" or timed_out):
            log(f"{ds} / {system}: reusing {rel(cache)} from {old.get('finished')}")
            old["reused"] = True
            return old
    res["fingerprint"] = fingerprint
    if sys_dir.exists():
        shutil.rmtree(sys_dir)
    sys_dir.mkdir(parents=True)
    out_dir = sys_dir / "train"

    # eval frequency: the same number of dev evaluations per epoch for both
    eval_freq = None
    try:
        st = worker("steps", {"config": str(cfg), "train": train_p, "dev": dev_p,
                              "epochs": epochs}, sys_dir / "steps.log", env, timeout=600)
        res["steps_per_epoch_estimate"] = st["steps_per_epoch"]
        eval_freq = max(10, int(math.ceil(st["total_steps"] / (a.evals_per_epoch * epochs))))
    except Exception as e:  # noqa: BLE001
        res["steps_error"] = str(e)[-500:]
    res["eval_frequency"] = eval_freq

    cmd = [sys.executable, "-m", "spacy", "train", str(cfg), "--output", str(out_dir),
           "--paths.train", train_p, "--paths.dev", dev_p,
           "--training.max_epochs", str(epochs), "--training.max_steps", "0",
           "--training.patience", "0", "--system.seed", str(seed)]
    if eval_freq:
        cmd += ["--training.eval_frequency", str(eval_freq)]
    timing_file = sys_dir / "timing.json"
    wrapped = can_wrap_logger(cfg)
    if wrapped:
        cmd += ["--code", str(Path(__file__).resolve()),
                "--training.logger.@loggers", "bench.TimingLogger.v1"]
    res["timing_logger"] = wrapped
    tenv = dict(env, BENCH_TIMING_FILE=str(timing_file))
    res["commands"].append(qjoin(cmd))
    log(f"{ds} / {system} / seed {seed}: training {epochs} epoch(s) on {data['train']['docs']} docs"
        f" (eval every {eval_freq or 'config'} steps) ...")
    tr = run_cmd(cmd, sys_dir / "train.log", timeout=a.train_timeout, env=tenv)
    train: Dict[str, Any] = {"wall_s": tr["wall_s"], "cpu_s": tr["cpu_s"],
                             "peak_rss_mb": tr["peak_rss_mb"], "rc": tr["rc"],
                             "log": tr["log"], "timed_out": tr["timed_out"],
                             "loadavg_1min": tr["loadavg_1min"]}
    words = data["train"]["words"] * epochs
    train["words_planned"] = words
    train["wps_wall"] = words / tr["wall_s"]
    train["s_per_epoch_wall"] = tr["wall_s"] / epochs
    if timing_file.exists():
        t = json.loads(timing_file.read_text())
        train_loop = t["loop_s"] - t["eval_s"] - t["save_s"]
        train.update({"loop_s": t["loop_s"], "eval_s": t["eval_s"], "save_s": t["save_s"],
                      "n_evals": t["n_evals"], "n_steps": t["n_steps"],
                      "update_s": t["update_s"], "words": t["update_words"],
                      "train_s": train_loop,
                      "wps": t["update_words"] / train_loop if train_loop > 0 else None,
                      "s_per_epoch": train_loop / epochs, "evals": t["evals"]})
        if tr["timed_out"]:  # fewer words than planned were seen
            train["wps_wall"] = t["update_words"] / tr["wall_s"]
            train["s_per_epoch_wall"] = train["s_per_epoch"] = None
        if t.get("peak_rss_mb"):
            train["peak_rss_mb"] = max(train["peak_rss_mb"] or 0, t["peak_rss_mb"])
    res["train"] = train
    best, last = out_dir / "model-best", out_dir / "model-last"
    if tr["rc"] != 0 and not tr["timed_out"]:
        res["status"] = f"failed: spacy train exited with {tr['rc']}"
        res["error_tail"] = tail(sys_dir / "train.log", 25)
        log(f"{ds} / {system}: TRAINING FAILED (rc={tr['rc']}), see {tr['log']}")
        cache.write_text(json.dumps(res, indent=1))
        return res
    if tr["timed_out"]:
        res["status"] = "timeout (partial training)"
    if not best.exists():
        res["status"] = ("timeout: no model-best yet" if tr["timed_out"]
                         else "failed: no model-best")
        cache.write_text(json.dumps(res, indent=1))
        return res
    log(f"{ds} / {system}: trained in {tr['wall_s']:.0f}s "
        f"(train wps {train.get('wps') or train['wps_wall']:.0f}, peak RSS "
        f"{train['peak_rss_mb'] or 0:.0f} MB)")

    # model selection on dev: spaCy's model-best, unless model-last (the end of
    # the final epoch, after the last dev evaluation) scores higher on dev.
    model = best
    res["selected"] = "model-best"
    if a.last_check and last.exists():
        try:
            dv = worker("devscore", {"models": {"model-best": str(best), "model-last": str(last)},
                                     "dev": dev_p}, sys_dir / "devscore.log", env)
            dv.pop("_proc", None)
            res["dev"] = dv
            if dv["model-last"]["score"] > dv["model-best"]["score"]:
                model, res["selected"] = last, "model-last"
        except Exception as e:  # noqa: BLE001
            res["dev_error"] = str(e)[-500:]
    res["model"] = rel(model)

    # test scores with the CLI
    scores_path = sys_dir / "scores.json"
    cmd = [sys.executable, "-m", "spacy", "evaluate", str(model), test_p,
           "--output", str(scores_path)]
    res["commands"].append(qjoin(cmd))
    log(f"{ds} / {system}: evaluating {res['selected']} on test ...")
    ev = run_cmd(cmd, sys_dir / "evaluate.log", env=env, timeout=1800)
    if ev["rc"] != 0 or not scores_path.exists():
        res["status"] = f"failed: spacy evaluate exited with {ev['rc']}"
        res["error_tail"] = tail(sys_dir / "evaluate.log", 25)
        cache.write_text(json.dumps(res, indent=1))
        return res
    res["test"] = pick_scores(task, json.loads(scores_path.read_text()))

    # inference speed, predict RSS, accuracy, parameter bytes
    log(f"{ds} / {system}: timing inference (batch_size {a.batch_size}, "
        f"median of {a.infer_runs}) ...")
    pr_args = {"model": str(model), "test": test_p, "batch_size": a.batch_size,
               "runs": a.infer_runs, "task": task}
    res["commands"].append(qjoin([sys.executable, "bench/run_bench.py", "_worker", "predict",
                                  json.dumps(pr_args)]))
    try:
        pr = worker("predict", pr_args, sys_dir / "predict.log", env, timeout=1800)
    except Exception as e:  # noqa: BLE001
        res["status"] = "failed: predict worker"
        res["error_tail"] = str(e)[-1500:]
        cache.write_text(json.dumps(res, indent=1))
        return res
    proc = pr.pop("_proc")
    params = pr.pop("params")
    pr["peak_rss_mb"] = max(pr.get("peak_rss_mb") or 0, proc["peak_rss_mb"] or 0)
    pr["loadavg_1min"] = proc["loadavg_1min"]
    pr["cpu_s"] = proc["cpu_s"]
    res["infer"] = pr
    if "accuracy" in pr:
        res["test"]["accuracy"] = pr["accuracy"]
    disk = dir_bytes(model)
    res["size"] = dict(params, disk_bytes=disk,
                       disk_over_params=disk / params["param_bytes"] if params["param_bytes"] else None)
    res["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    main = " ".join(f"{k}={fmt(res['test'].get(k))}" for k in TASKS[task]["main"])
    log(f"{ds} / {system} / seed {seed}: {main}  infer wps {pr['wps']:.0f}  "
        f"predict RSS {pr['peak_rss_mb']:.0f} MB  disk {disk / 1e6:.1f} MB")
    cache.write_text(json.dumps(res, indent=1))
    return res


def interleaved_speed(ds: str, entry: dict, a: argparse.Namespace, ds_dir: Path,
                      env: dict) -> Optional[dict]:
    """The efficiency presets' inference words/s, timed interleaved in one
    process (`w_speed`) on the first seed where both ran: the ratio that the
    efficiency target is judged on. Only the efficiency pair: the target has
    no speed term for the accuracy presets, and spaCy's accuracy preset runs
    at a few thousand words/s."""
    pair = ("spacy-efficiency", "ours-efficiency")
    runs = [_get(entry, "systems", name, "runs") or {} for name in pair]
    seed = next((s for s in runs[0] if runs[0][s].get("status") == "ok"
                 and (runs[1].get(s) or {}).get("status") == "ok"), None)
    if seed is None:
        return None
    models = {name: str(REPO / r[seed]["model"]) for name, r in zip(pair, runs)}
    log(f"{ds}: timing {' and '.join(pair)} interleaved (seed {seed}) ...")
    try:
        res = worker("speed", {"models": models, "test": entry["data"]["test"]["path"],
                               "batch_size": a.batch_size, "runs": max(a.infer_runs, 5)},
                     ds_dir / "speed.log", env, timeout=1800)
    except Exception as e:  # noqa: BLE001 - report and carry on
        log(f"{ds}: interleaved timing FAILED: {e}")
        return {"seed": int(seed), "error": str(e)[-500:]}
    res.pop("_proc", None)
    return {"seed": int(seed), "ratio": ratio(res[pair[1]]["wps"], res[pair[0]]["wps"]), "runs": res}


def ratio(a, b):
    try:
        return a / b if a is not None and b else None
    except TypeError:
        return None


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def fmt(v, spec=".3f", scale=1.0):
    if v is None:
        return "–"
    try:
        return format(v * scale, spec)
    except (TypeError, ValueError):
        return str(v)


def score_keys(task: str) -> List[str]:
    """Main scores first, then the other test scores of the task's tables."""
    extra = {"ner": ["ents_p", "ents_r"],
             "textcat": ["accuracy", "cats_macro_auc"],
             "textcat_multilabel": ["cats_micro_f"]}[task]
    return TASKS[task]["main"] + extra


def _spread(values: List[float]) -> Optional[dict]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(task: str, runs: Dict[str, dict]) -> dict:
    """Median and range over the seeds that ran to the end (status ok)."""
    ok = [r for r in runs.values() if r.get("status") == "ok"]
    out = {"seeds_ok": [r["seed"] for r in ok], "seeds": [r.get("seed") for r in runs.values()]}
    for k in score_keys(task):
        out[k] = _spread([_get(r, "test", k) for r in ok])
    out["infer_wps"] = _spread([_get(r, "infer", "wps") for r in ok])
    out["train_wps"] = _spread([_get(r, "train", "wps") or _get(r, "train", "wps_wall")
                                for r in ok])
    out["train_rss_mb"] = _spread([_get(r, "train", "peak_rss_mb") for r in ok])
    out["predict_rss_mb"] = _spread([_get(r, "infer", "peak_rss_mb") for r in ok])
    out["disk_bytes"] = _spread([_get(r, "size", "disk_bytes") for r in ok])
    out["param_bytes"] = _spread([_get(r, "size", "param_bytes") for r in ok])
    out["selected"] = {sel: sum(1 for r in ok if r.get("selected") == sel)
                       for sel in {r.get("selected") for r in ok}}
    return out


def compare(task: str, systems: dict, interleaved: Optional[dict] = None) -> Dict[str, dict]:
    """Per preset: ours minus spaCy on the median of every main score (in
    points), whether the seed ranges overlap, the inference speed ratio and
    whether the issue's target holds (every main score +1 point; efficiency
    also at >= 1.0x spaCy's inference words/s, the interleaved ratio where
    there is one, else the ratio of the systems' own predict runs)."""
    out = {}
    for preset in PRESETS:
        s = _get(systems, f"spacy-{preset}", "summary")
        o = _get(systems, f"ours-{preset}", "summary")
        if not s or not o:
            continue
        row: Dict[str, Any] = {"scores": {}}
        met = True
        for k in TASKS[task]["main"]:
            sv, ov = s.get(k), o.get(k)
            if not sv or not ov:
                met = None
                continue
            delta = ov["median"] - sv["median"]
            row["scores"][k] = {"delta_points": 100 * delta,
                                "ranges_overlap": ov["min"] <= sv["max"] and sv["min"] <= ov["max"]}
            met = met and delta >= 0.01
        row["infer_wps_ratio"] = ratio(_get(o, "infer_wps", "median"), _get(s, "infer_wps", "median"))
        speed = row["infer_wps_ratio"]
        if preset == "efficiency" and interleaved and interleaved.get("ratio") is not None:
            speed = row["infer_wps_ratio_interleaved"] = interleaved["ratio"]
        if preset == "efficiency" and met:
            met = speed is not None and speed >= 1.0
        row["target_met"] = met
        row["seeds"] = [len(s["seeds_ok"]), len(o["seeds_ok"])]
        out[preset] = row
    return out


def fmt_spread(sp: Optional[dict], spec=".3f", scale=1.0) -> str:
    if not sp:
        return "–"
    if sp["n"] == 1:
        return fmt(sp["median"], spec, scale)
    return (f"{fmt(sp['median'], spec, scale)} "
            f"[{fmt(sp['min'], spec, scale)}–{fmt(sp['max'], spec, scale)}]")


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def write_report(results: dict, out: Path, shim_overhead: Optional[Path]) -> str:
    L: List[str] = []
    mode = results["mode"]
    L.append(f"# Benchmark: spaCy's efficiency and accuracy pipelines vs spacy-pytorch-shim ({mode} mode)")
    L.append("")
    L.append(f"Run {results['started']} – {results['finished']} "
             f"({results['elapsed_min']:.1f} min). Command: `{results['argv']}`")
    L.append("")
    m, v = results["machine"], results["versions"]
    L.append(f"**Machine:** {m['cpu_model']}, {m['usable_cores']} usable cores "
             f"(os.cpu_count {m['cpu_count']}), {m['mem_total_gib']} GiB RAM, "
             f"{m['platform']}. CPU only.  ")
    L.append("**Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()
                                         if k not in ("git_commit", "git_dirty")) +
             f", git {str(v.get('git_commit'))[:10]}{' (dirty)' if v.get('git_dirty') else ''}.  ")
    st = results["settings"]
    L.append(f"**Settings:** seeds {', '.join(map(str, st['seeds']))} (scores: median "
             f"[min–max] over the seeds); inference batch_size {st['batch_size']}, median of "
             f"{st['infer_runs']} timed runs after a warm-up; threads: "
             f"{st['threads'] or 'library defaults'}; dev evaluations per epoch: "
             f"{st['evals_per_epoch']}; train timeout {st['train_timeout']} s per run.")
    L.append("")
    # targets: ours against spaCy's preset of the same name
    L.append("## Ours against spaCy, preset by preset")
    L.append("")
    L.append("Target: every main score of ours >= spaCy's + 1 point (median over the "
             "seeds), and for the efficiency preset inference words/s >= 1.0x spaCy's. "
             "\"overlap\": the two seed ranges overlap, so the difference is within the noise. "
             "Inference words/s ours/spaCy: \"own runs\", the medians of each system's own "
             "predict runs (timed minutes apart); \"interleaved\", the two efficiency "
             "pipelines timed in one process, round by round (the ratio the efficiency "
             "target is judged on).")
    L.append("")
    L.append("| dataset | task | preset | main score | spaCy | ours | ours − spaCy (points) "
             "| inference wps ours/spaCy: own runs | interleaved | target |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for ds, d in results["datasets"].items():
        for preset, c in (d.get("compare") or {}).items():
            for k in TASKS[d["task"]]["main"]:
                sc = c["scores"].get(k)
                delta = "–" if not sc else (f"{sc['delta_points']:+.1f}"
                                            + (" (overlap)" if sc["ranges_overlap"] else ""))
                verdict = {True: "met", False: "missed", None: "not measured"}[c["target_met"]]
                L.append(f"| {ds} | {d['task']} | {preset} | {k} | "
                         f"{fmt_spread(_get(d, 'systems', f'spacy-{preset}', 'summary', k))} | "
                         f"{fmt_spread(_get(d, 'systems', f'ours-{preset}', 'summary', k))} | "
                         f"{delta} | {fmt(c['infer_wps_ratio'], '.2f')} | "
                         f"{fmt(c.get('infer_wps_ratio_interleaved'), '.2f')} | {verdict} |")
    L.append("")
    if (out / "score_vs_speed.png").exists():
        L.append("![score against inference speed](score_vs_speed.png)")
        L.append("")
    # per task tables: medians [ranges] over the seeds
    names = {"ents_f": "ents_f", "ents_p": "ents_p", "ents_r": "ents_r",
             "accuracy": "accuracy", "cats_macro_f": "macro F",
             "cats_macro_auc": "macro AUC", "cats_micro_f": "micro F"}
    for task in TASKS:
        rows = [(ds, d) for ds, d in results["datasets"].items() if d["task"] == task]
        if not rows:
            continue
        L.append(f"## {TASK_TITLES[task]}")
        L.append("")
        keys = score_keys(task)
        head = (["dataset", "system", "seeds ok", "epochs", "train docs"]
                + [names[k] for k in keys]
                + ["infer wps", "train wps", "train RSS MB", "predict RSS MB", "disk MB",
                   "param MB", "selected"])
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for ds, d in rows:
            for sysname in SYSTEMS:
                r = d["systems"].get(sysname)
                if r is None:
                    continue
                sm = r["summary"]
                cells = [ds, sysname, f"{len(sm['seeds_ok'])}/{len(sm['seeds'])}",
                         str(d["epochs"]), str(_get(d, "data", "train", "docs"))]
                cells += [fmt_spread(sm.get(k)) for k in keys]
                cells += [fmt_spread(sm["infer_wps"], ".0f"), fmt_spread(sm["train_wps"], ".0f"),
                          fmt(_get(sm, "train_rss_mb", "median"), ".0f"),
                          fmt(_get(sm, "predict_rss_mb", "median"), ".0f"),
                          fmt(_get(sm, "disk_bytes", "median"), ".1f", 1e-6),
                          fmt(_get(sm, "param_bytes", "median"), ".1f", 1e-6),
                          ", ".join(f"{k} {n}" for k, n in sorted(sm["selected"].items())) or "–"]
                L.append("| " + " | ".join(cells) + " |")
        L.append("")
    # every run
    L.append("## Every run")
    L.append("")
    L.append("| dataset | system | seed | status | scores | infer wps | train wall s | selected |")
    L.append("|---|---|---|---|---|---|---|---|")
    for ds, d in results["datasets"].items():
        for sysname, r in d["systems"].items():
            for run in r["runs"].values():
                status = run["status"] + (f" (reused, {run.get('finished')})" if run.get("reused") else "")
                scores = ", ".join(f"{names[k]} {fmt(_get(run, 'test', k))}"
                                   for k in TASKS[d["task"]]["main"])
                L.append(f"| {ds} | {sysname} | {run.get('seed')} | {status} | {scores} | "
                         f"{fmt(_get(run, 'infer', 'wps'), '.0f')} | "
                         f"{fmt(_get(run, 'train', 'wall_s'), '.0f')} | {run.get('selected', '–')} |")
    L.append("")
    # data
    L.append("## Data")
    L.append("")
    L.append("| dataset | split | docs used | words | source docs | subsampled | path |")
    L.append("|---|---|---|---|---|---|---|")
    for ds, d in results["datasets"].items():
        for split, info in d["data"].items():
            L.append(f"| {ds} | {split} | {info['docs']} | {info['words']} | {info['source_docs']} | "
                     f"{'yes (seed 0)' if info['subsampled'] else 'no'} | `{rel(info['path'])}` |")
    L.append("")
    # definitions
    L.append("## How the numbers are measured")
    L.append("")
    L.append(DEFINITIONS)
    L.append("")
    # commands
    L.append("## Exact commands")
    L.append("")
    L.append("```")
    L.append(results["argv"])
    for c in results.get("init_commands", []):
        L.append(c)
    for ds, d in results["datasets"].items():
        for sysname in SYSTEMS:
            for run in _get(d, "systems", sysname, "runs", ) or {}:
                for c in d["systems"][sysname]["runs"][run].get("commands", []):
                    L.append(c)
    L.append("```")
    L.append("")
    if shim_overhead is not None:
        L.append("## Shim overhead")
        L.append("")
        if shim_overhead.exists():
            L.append(f"(included from `{rel(shim_overhead)}`, produced by `bench/shim_overhead.py`)")
            L.append("")
            L.append(shim_overhead.read_text().strip())
        else:
            L.append(f"`{rel(shim_overhead)}` not found: run `bench/shim_overhead.py` first.")
        L.append("")
    # machine load: other processes on the machine distort every timing
    L.append("## Machine load during the measurements")
    L.append("")
    L.append("1-minute load average at start and end of each training run and "
             "prediction worker, and the CPU seconds (user + sys) of the training "
             "process. Timings taken while the load exceeds the number of usable "
             f"cores ({m['usable_cores']}) are inflated by other processes.")
    L.append("")
    L.append("| dataset | system | seed | train load (start→end) | train wall s | train CPU s | predict load (start→end) |")
    L.append("|---|---|---|---|---|---|---|")
    busy = False
    for ds, d in results["datasets"].items():
        for sysname, r in ((f"{s} | {run['seed']}", run) for s, sr in d["systems"].items()
                           for run in sr["runs"].values()):
            tl = _get(r, "train", "loadavg_1min")
            pl = _get(r, "infer", "loadavg_1min")
            if not tl:
                continue
            busy |= max(tl + (pl or [])) > (m["usable_cores"] or 1) + 0.5
            L.append(f"| {ds} | {sysname} | {tl[0]}→{tl[1]} | {fmt(_get(r, 'train', 'wall_s'), '.0f')} | "
                     f"{fmt(_get(r, 'train', 'cpu_s'), '.0f')} | "
                     f"{'→'.join(map(str, pl)) if pl else '–'} |")
    L.append("")
    if busy:
        L.append("**Warning:** the machine was busy with other processes during part of "
                 "this run (load above the core count); speed numbers are pessimistic "
                 "and the ratios noisier than usual.")
        L.append("")
    # problems
    probs = [(ds, f"{s} / seed {r.get('seed')}", r) for ds, d in results["datasets"].items()
             for s, sr in d["systems"].items() for r in sr["runs"].values()
             if r.get("status") != "ok"]
    if probs:
        L.append("## Problems")
        L.append("")
        for ds, s, r in probs:
            L.append(f"* {ds} / {s}: {r['status']}" + (f" ({r.get('config')})" if r.get("config") else ""))
            if r.get("error_tail"):
                L.append("")
                L.append("  ```")
                L.extend("  " + line for line in r["error_tail"].splitlines()[-12:])
                L.append("  ```")
        L.append("")
    text = "\n".join(L)
    (out / "report.md").write_text(text)
    return text


DEFINITIONS = """\
* **Training**: `python -m spacy train CFG --output DIR --paths.train … --paths.dev …
  --training.max_epochs N --training.max_steps 0 --training.patience 0
  --system.seed S` in a subprocess, once per seed S; every score is reported
  as the median [min–max] over the seeds that ran to the end. In spaCy 3.8 `max_steps = 0` and `patience = 0` both mean "no
  limit" (`if max_steps and step >= max_steps`, `if patience and …`), so
  exactly N epochs run. spaCy evaluates on dev only every `eval_frequency`
  steps (not at epoch ends); the harness sets `--training.eval_frequency` per
  system so that both get about the same number of dev evaluations per epoch
  (steps counted by running the config's own batcher over the train set for N
  epochs, in a worker, before training).
* **Model selection**: on dev only. `model-best` is spaCy's best dev checkpoint;
  because the steps after the last dev evaluation are never scored by spacy
  train, the harness also scores `model-last` on dev (weighted score from the
  config's `training.score_weights`, exactly as spacy train computes it) and
  takes it when it is higher (column "selected"). The test set is used only
  for the reported scores.
* **Test scores**: `python -m spacy evaluate MODEL test.spacy --output scores.json`
  (NER: ents_f/p/r; textcat: cats_macro_f, cats_macro_auc, cats_micro_f).
  Main scores: ents_f; macro F (exclusive); macro AUC and macro F (multi-label).
  **Accuracy** (exclusive textcat) is computed by the harness: argmax of the
  predicted `doc.cats` against the argmax of the gold `doc.cats` over all
  test docs (predictions from `nlp.pipe` on the test texts).
* **Train wps**: words passed to `nlp.update` divided by the time of the
  training loop minus dev evaluations and checkpoint saves, measured inside
  `spacy train` by the logger `bench.TimingLogger.v1` (this file, loaded
  with `--code`, wrapping spaCy's console logger; used only when the config's
  logger is a plain `spacy.ConsoleLogger`). **Train wps (wall)**: words in the
  train set × epochs / wall time of the whole `spacy train` process (includes
  start-up, initialization, dev evaluations and saving). **s/epoch** is the
  loop time (without evaluations/saves) per epoch, else wall time per epoch.
* **Inference wps**: one fresh process, CPU, `nlp.pipe(test texts,
  batch_size=B)`, a warm-up over the first 2·B texts and one untimed pass over
  all test texts, then the median of 3 timed runs; a run is k passes over all
  test texts, with k chosen so that a run lasts ≥ 0.5 s (k = 1 except for
  tiny test sets); words = tokens of the output docs × k.
* **Peak RSS**: training: VmHWM of the `spacy train` process (polled from
  `/proc/PID/status` every 0.1 s, and read by the logger at the end of the
  loop; VmHWM is per address space, so the parent's memory does not leak into
  it as it does with `ru_maxrss` of a forked child). Predicting: VmHWM of the
  prediction worker (imports, model load, test docs and all timed passes).
* **Size**: disk = bytes of all files in the selected model directory;
  params = for every pipeline component, every Thinc node in
  `component.model.walk()`: nbytes of its param arrays, plus, for each torch
  shim of the node, `sum(t.numel() * t.element_size() for t in
  shim._model.state_dict().values())` (nodes and shims de-duplicated).
"""


def plot(results: dict, out: Path) -> Optional[Path]:
    """Test score (median over the seeds, bar: range) against inference
    words/s (median), one panel per main score of each task."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log("matplotlib not available: no plot")
        return None
    panels = [(t, k) for t in TASKS if any(d["task"] == t for d in results["datasets"].values())
              for k in TASKS[t]["main"]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    markers = {"spacy-efficiency": "o", "spacy-accuracy": "^",
               "ours-efficiency": "s", "ours-accuracy": "D"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, main) in zip(axes[0], panels):
        for i, (ds, d) in enumerate((k, v) for k, v in results["datasets"].items()
                                    if v["task"] == task):
            for sysname in SYSTEMS:
                sm = _get(d, "systems", sysname, "summary") or {}
                x, y = _get(sm, "infer_wps", "median"), sm.get(main)
                if x is None or not y:
                    continue
                ax.errorbar([x], [y["median"]],
                            yerr=[[y["median"] - y["min"]], [y["max"] - y["median"]]],
                            fmt=markers[sysname], ms=7, capsize=3,
                            color=colors[i % len(colors)],
                            mfc="none" if sysname.startswith("spacy") else colors[i % len(colors)],
                            label=f"{ds} / {sysname}")
        ax.set_xscale("log")
        # Labels at 1, 2 and 5 of each decade, written short (20k): matplotlib's
        # own minor labels overlap on spans of one to two decades.
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("inference words/second (log scale)")
        ax.set_ylabel(f"test {main}")
        ax.set_title(f"{TASK_TITLES[task]}: {main}", fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"Score against inference speed ({results['mode']} mode, median of seeds "
                 f"{', '.join(map(str, results['settings']['seeds']))}; bars: range). "
                 f"spaCy hollow (o efficiency, ^ accuracy), ours filled (s efficiency, D accuracy)",
                 fontsize=9)
    fig.tight_layout()
    path = out / "score_vs_speed.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a scaled protocol: train/dev/test subsampled to at most "
                        "2000/500/1000 docs, 5 epochs, seed 0 (see bench/README.md)")
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset of " + ",".join(DATASETS))
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--seeds", default=None,
                   help="comma-separated training seeds (--system.seed); full: 0,1,2, quick: 0")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every dataset")
    p.add_argument("--out", default=str(REPO / "bench" / "results"),
                   help="results folder; the run writes to OUT/quick or OUT/full")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--train-limit", type=int, default=None,
                   help="subsample train to at most this many docs (all datasets)")
    p.add_argument("--dev-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size")
    p.add_argument("--infer-runs", type=int, default=3)
    p.add_argument("--evals-per-epoch", type=float, default=None,
                   help="dev evaluations per epoch (sets --training.eval_frequency)")
    p.add_argument("--threads", type=int, default=None,
                   help="set OMP/MKL/OPENBLAS threads and torch.set_num_threads in all "
                        "subprocesses (default: library defaults)")
    p.add_argument("--train-timeout", type=float, default=None,
                   help="seconds per spacy train run; on timeout the run is stopped and "
                        "its model-best evaluated, marked 'timeout'")
    p.add_argument("--no-last-check", dest="last_check", action="store_false",
                   help="always use model-best (do not also score model-last on dev)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse a system's earlier result in the same output folder when "
                        "config, data, epochs and versions are unchanged")
    p.add_argument("--shim-overhead", default=None,
                   help="markdown file (from bench/shim_overhead.py) to include in the report")
    p.add_argument("--ours-config-dir", default=str(REPO / "configs"),
                   help="folder with our presets: <task>.cfg (efficiency) and "
                        "<task>_accuracy.cfg")
    a = p.parse_args(argv)

    mode = "quick" if a.quick else "full"
    M = QUICK if a.quick else FULL
    datasets = a.datasets.split(",") if a.datasets else list(M["datasets"])
    for ds in datasets:
        if ds not in DATASETS:
            p.error(f"unknown dataset {ds!r}; choose from {','.join(DATASETS)}")
    systems = [s for s in a.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}")
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else list(M["seeds"])
    if a.evals_per_epoch is None:
        a.evals_per_epoch = M["evals_per_epoch"]
    if a.train_timeout is None:
        a.train_timeout = M["train_timeout"]
    a._versions = versions()

    out = Path(a.out) / mode
    out.mkdir(parents=True, exist_ok=True)
    env = child_env(a.threads)
    data_dir = Path(a.data_dir)
    started = _dt.datetime.now(_dt.timezone.utc)
    log(f"mode={mode} datasets={','.join(datasets)} systems={','.join(systems)} "
        f"seeds={','.join(map(str, seeds))} out={rel(out)}")

    # spaCy's own configs, both presets
    cfg_dir = out / "configs"
    cfg_dir.mkdir(exist_ok=True)
    init_cmds = []
    spacy_cfgs = {}
    for task in sorted({DATASETS[ds] for ds in datasets}):
        pipe = TASKS[task]["pipe"]
        for preset in PRESETS:
            if f"spacy-{preset}" not in systems:
                continue
            path = cfg_dir / f"spacy_{pipe}_{preset}.cfg"
            overrides = SPACY_NO_VECTORS if preset == "accuracy" else {}
            worker("spacy_config", {"pipe": pipe, "optimize": preset, "path": str(path),
                                    "set": overrides},
                   cfg_dir / f"init_{pipe}_{preset}.log", env, timeout=300)
            init_cmds.append(qjoin([sys.executable, "-m", "spacy", "init", "config", "-l", "en",
                                    "-p", pipe, "-o", preset, str(path)])
                             + "".join(f" # then {k} = {json.dumps(val)}"
                                       for k, val in overrides.items()))
            spacy_cfgs[task, preset] = path

    results: Dict[str, Any] = {
        "mode": mode,
        "argv": qjoin(["python", "bench/run_bench.py"] + (sys.argv[1:] if argv is None else argv)),
        "started": started.isoformat(timespec="seconds"), "machine": machine_info(),
        "versions": a._versions, "init_commands": init_cmds,
        "settings": {"batch_size": a.batch_size, "infer_runs": a.infer_runs,
                     "threads": a.threads, "evals_per_epoch": a.evals_per_epoch,
                     "train_timeout": a.train_timeout, "last_check": a.last_check,
                     "systems": systems, "seeds": seeds},
        "datasets": {},
    }
    res_path = out / "results.json"

    def save(final=False):
        now = _dt.datetime.now(_dt.timezone.utc)
        results["finished"] = now.isoformat(timespec="seconds")
        results["elapsed_min"] = (now - started).total_seconds() / 60
        results["complete"] = final
        res_path.write_text(json.dumps(results, indent=1))

    for ds in datasets:
        task = DATASETS[ds]
        epochs = a.epochs if a.epochs is not None else M["epochs"]

        def lim(split):
            v = getattr(a, f"{split}_limit")
            if v is not None:
                return v
            m = M[f"{split}_limit"]
            return m.get(ds) if isinstance(m, dict) else m

        limits = {s: lim(s) for s in ("train", "dev", "test")}
        src = {s: str(data_dir / ds / f"{s}.spacy") for s in ("train", "dev", "test")}
        if not all(Path(v).exists() for v in src.values()):
            log(f"{ds}: data missing under {data_dir / ds}, skipped")
            results["datasets"][ds] = {"task": task, "epochs": epochs, "data": {},
                                       "systems": {}, "error": "data missing"}
            continue
        dst = {s: str(out / "data" / ds / f"{s}.spacy") for s in ("train", "dev", "test")}
        log(f"{ds}: preparing data (limits {limits}) ...")
        data = worker("prepare", {"src": src, "dst": dst, "limits": limits, "seed": 0},
                      out / "data" / ds / "prepare.log", env)
        data.pop("_proc", None)
        entry = {"task": task, "epochs": epochs, "data": data, "systems": {}}
        results["datasets"][ds] = entry
        for sysname in systems:
            side, preset = SYSTEMS[sysname]
            cfg = spacy_cfgs[task, preset] if side == "spacy" else \
                Path(a.ours_config_dir) / Path(TASKS[task]["ours_cfg"][preset]).name
            sys_entry = {"config": rel(cfg), "runs": {}}
            entry["systems"][sysname] = sys_entry
            for seed in seeds:
                t = time.time()
                try:
                    r = run_system(ds, task, sysname, cfg, data, epochs, seed, a,
                                   out / "runs" / ds / sysname / f"seed{seed}", env)
                except Exception as e:  # noqa: BLE001 - report and carry on
                    r = {"system": sysname, "seed": seed, "config": rel(cfg),
                         "status": f"failed: {type(e).__name__}", "error_tail": str(e)[-2000:]}
                    log(f"{ds} / {sysname} / seed {seed}: FAILED: {e}")
                r["total_s"] = time.time() - t
                sys_entry["runs"][str(seed)] = r
                sys_entry["summary"] = summarize(task, sys_entry["runs"])
                entry["compare"] = compare(task, entry["systems"])
                save()
        entry["interleaved_speed"] = interleaved_speed(ds, entry, a, out / "runs" / ds, env)
        entry["compare"] = compare(task, entry["systems"], entry["interleaved_speed"])
        save()
    plot(results, out)
    save(final=True)
    shim = Path(a.shim_overhead) if a.shim_overhead else None
    write_report(results, out, shim)
    log(f"done: {rel(res_path)}, {rel(out / 'report.md')}, {rel(out / 'score_vs_speed.png')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
