"""The measurements that need spaCy or torch, each run by the harness in a
fresh interpreter (runner.run_worker) so that none inherits another's imports,
caches or memory:

    python bench/workers.py NAME JSON_ARGS

NAME is one of WORKERS; the result goes, as JSON, to the file named by the
argument `_out`."""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from runner import vm_hwm_mb


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
    writes it (CPU; with `a["gpu"]`, as `--gpu` writes it: spacy-transformers'
    transformer config, where spacy-transformers is installed), with the
    overrides `a["set"]` (dotted keys) applied."""
    from spacy.cli.init_config import init_config
    from thinc.api import Config

    cfg = init_config(lang="en", pipeline=[a["pipe"]], optimize=a["optimize"], gpu=a.get("gpu", False))
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


def _encoder_precision(model: str, precision: Optional[str]) -> dict:
    """Config overrides giving each HFEncoder of a saved pipeline `precision`
    (none for None)."""
    if precision is None:
        return {}
    from grid import find_blocks, load_config

    encoders = find_blocks(load_config(Path(model) / "config.cfg"),
                           lambda node: str(node.get("@architectures")).startswith("spacy-pytorch-shim.HFEncoder."))
    if not encoders:
        raise ValueError(f"{model}: no HFEncoder in its config.cfg")
    return {f"{path}.mixed_precision": precision for path in encoders}


def w_predict(a: dict) -> dict:
    """Loads a model, counts parameter bytes, times nlp.pipe on the test texts
    (warm-up, then median of N runs) and computes exclusive-class accuracy."""
    t_start = time.perf_counter()
    import spacy
    from spacy.tokens import DocBin

    torch_threads = _set_torch_threads()
    nlp = spacy.load(a["model"], config=_encoder_precision(a["model"], a.get("encoder_precision")))
    t_loaded = time.perf_counter()
    rss_after_load = vm_hwm_mb()
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
    out["peak_rss_mb"] = vm_hwm_mb()
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


def w_long_doc(a: dict) -> dict:
    """Peak RSS of annotating one document of `a["tokens"]` tokens (the
    texts of `a["source"]` joined until long enough) with `a["model"]`."""
    import spacy
    from spacy.tokens import DocBin

    torch_threads = _set_torch_threads()
    nlp = spacy.load(a["model"])
    texts = [d.text for d in DocBin().from_disk(a["source"]).get_docs(nlp.vocab)]
    words: List[str] = []
    while len(words) < a["tokens"]:
        words.extend(" ".join(texts).split())
    doc = nlp.make_doc(" ".join(words))
    doc = doc[: a["tokens"]].as_doc()
    rss_loaded = vm_hwm_mb()
    t = time.perf_counter()
    doc = nlp(doc)
    return {"tokens": len(doc), "rss_after_load_mb": rss_loaded, "peak_rss_mb": vm_hwm_mb(),
            "seconds": time.perf_counter() - t, "torch_threads": torch_threads}


def w_unlabelled(a: dict) -> dict:
    """Up to `a["docs"]` texts of `a["source"]` (a .spacy file) that are in
    none of `a["exclude"]` (the splits a run trains, selects and scores on),
    in a seeded random order, written to `a["out"]` as .jsonl: unlabelled
    text of the same domain."""
    import random
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    taken = {d.text for path in a["exclude"] for d in DocBin().from_disk(path).get_docs(nlp.vocab)}
    texts = list(dict.fromkeys(d.text for d in DocBin().from_disk(a["source"]).get_docs(nlp.vocab)
                               if d.text not in taken))
    random.Random(a.get("seed", 0)).shuffle(texts)
    texts = texts[: a["docs"]]
    Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
    with open(a["out"], "w", encoding="utf8") as file:
        for text in texts:
            file.write(json.dumps({"text": text}) + "\n")
    return {"docs": len(texts), "words": sum(len(nlp.make_doc(t)) for t in texts)}


WORKERS = {"prepare": w_prepare, "unlabelled": w_unlabelled, "spacy_config": w_spacy_config, "steps": w_steps,
           "predict": w_predict, "devscore": w_devscore, "speed": w_speed, "long_doc": w_long_doc}


def main(name: str, args_json: str) -> None:
    a = json.loads(args_json)
    out = WORKERS[name](a)
    Path(a["_out"]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
