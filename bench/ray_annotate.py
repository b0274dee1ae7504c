#!/usr/bin/env python
"""Ray annotation against `nlp.pipe`, on this machine (docs/ray.md).

For each pipeline (btc NER, banking77 textcat) and a corpus of N documents
(the full test split's texts repeated), in one run:

* `nlp.pipe` in one process (one torch thread) and `nlp.pipe(n_process=2)`;
* `spacy_pytorch_shim.annotate.annotate` with 1 and 2 workers, each in a
  fresh driver process that starts its own local Ray instance (as the CLI
  does), plus 2 workers on N/10 documents for the driver's memory.

Reported: documents/s and words/s; for Ray, end to end (cluster start, actor
start and pipeline load included) and steady (after the first shard is
written); the start-up costs; the peak RSS of the driver and of each worker.
Every measurement runs in its own subprocess, so that RSS is per process.

    flock /tmp/cpu-bench.lock .venv/bin/python bench/ray_annotate.py --docs 100000

Pipelines are trained first if missing (`spacy train`, `--max-steps` steps on
the samples in data/; accuracy is not the point here).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PIPELINES = {"ner": ("configs/ner.cfg", "btc-sample", "btc"), "textcat": ("configs/textcat.cfg", "banking77-sample", "banking77")}
BATCH_SIZE = 128
SHARD_SIZE = 1000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(name: str, out: Path, max_steps: int) -> Path:
    config, sample, _ = PIPELINES[name]
    best = out / name / "model-best"
    if not best.exists():
        subprocess.run(
            [sys.executable, "-m", "spacy", "train", ROOT / config, "--output", out / name,
             "--paths.train", ROOT / "data" / sample / "train.spacy", "--paths.dev", ROOT / "data" / sample / "dev.spacy",
             "--training.max_steps", str(max_steps), "--training.eval_frequency", str(max_steps)],
            check=True, capture_output=True,
        )
    return best


def write_corpus(name: str, n_docs: int, path: Path) -> None:
    import spacy
    from spacy.tokens import DocBin

    texts = [d.text for d in DocBin().from_disk(SHARED / PIPELINES[name][2] / "test.spacy").get_docs(spacy.blank("en").vocab)]
    with path.open("w", encoding="utf8") as file:
        for i in range(n_docs):
            file.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")


def child(args: argparse.Namespace) -> Dict[str, Any]:
    """One measurement in this (fresh) process."""
    if args.mode == "ray":
        from spacy_pytorch_shim.annotate import annotate

        started = time.perf_counter()
        result = annotate(args.pipeline, args.corpus, args.output, workers=args.workers, shard_size=SHARD_SIZE, batch_size=BATCH_SIZE)
        total = time.perf_counter() - started
        # The first shard of each worker is the start-up; steady is the rest.
        steady_docs = max(result.docs - SHARD_SIZE * args.workers, 0)
        steady_s = result.run_s - result.first_shard_s
        return {
            "docs": result.docs, "words": result.words, "seconds": total,
            "ray_start_s": result.ray_start_s, "first_shard_s": result.first_shard_s,
            "steady_docs_per_s": steady_docs / steady_s if steady_docs else float("nan"),
            "driver_rss_mb": peak_rss_mb(),
            "workers": [vars(w) for w in result.workers.values()],
        }
    import spacy
    import torch

    torch.set_num_threads(1)
    nlp = spacy.load(args.pipeline)
    with open(args.corpus, encoding="utf8") as file:
        texts = [json.loads(line)["text"] for line in file]
    list(nlp.pipe(texts[:500], batch_size=BATCH_SIZE))  # warm-up
    started = time.perf_counter()
    words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=BATCH_SIZE, n_process=args.workers))
    seconds = time.perf_counter() - started
    return {"docs": len(texts), "words": words, "seconds": seconds, "driver_rss_mb": peak_rss_mb()}


def measure(mode: str, pipeline: Path, corpus: Path, workers: int, output: Path) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--pipeline", pipeline, "--corpus", corpus,
           "--workers", str(workers), "--output", output]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.setdefault("docs_per_s", result["docs"] / result["seconds"])
    result.setdefault("words_per_s", result["words"] / result["seconds"])
    print(f"  {mode} x{workers}: {result['docs_per_s']:.0f} docs/s", file=sys.stderr, flush=True)
    return result


def report(results: Dict[str, Dict[str, Any]], n_docs: int) -> str:
    lines = [
        f"{n_docs} documents, shards of {SHARD_SIZE}, batches of {BATCH_SIZE}, one torch thread per process.",
        "",
        "| pipeline | method | docs/s | words/s | steady docs/s | start-up | driver peak RSS | worker peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        for label, run in runs.items():
            if label.startswith("ray"):
                workers = run["workers"]
                startup = f"Ray {run['ray_start_s']:.1f} s, first shard {run['first_shard_s']:.1f} s, load {max(w['load_s'] for w in workers):.1f} s"
                steady = f"{run['steady_docs_per_s']:.0f}"
                worker_rss = ", ".join(f"{w['peak_rss_mb']:.0f}" for w in workers) + " MB"
            else:
                startup, steady, worker_rss = "", "", ""
            lines.append(
                f"| {name} | {label} | {run['docs_per_s']:.0f} | {run['words_per_s']:.0f} | {steady} | {startup} | "
                f"{run['driver_rss_mb']:.0f} MB | {worker_rss} |"
            )
    lines += ["", "| pipeline | Ray x2 / nlp.pipe(n_process=2) | Ray x2 / Ray x1 | (steady) | driver RSS 100% - 10% of the docs |", "|---|---|---|---|---|"]
    for name, runs in results.items():
        two, one, mp = runs["ray, 2 workers"], runs["ray, 1 worker"], runs["nlp.pipe(n_process=2)"]
        small = runs["ray, 2 workers, 10% of the docs"]
        lines.append(
            f"| {name} | {two['docs_per_s'] / mp['docs_per_s']:.2f} (steady {two['steady_docs_per_s'] / mp['docs_per_s']:.2f}) | "
            f"{two['docs_per_s'] / one['docs_per_s']:.2f} | {two['steady_docs_per_s'] / one['steady_docs_per_s']:.2f} | "
            f"{two['driver_rss_mb'] - small['driver_rss_mb']:+.0f} MB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--pipelines", default="ner,textcat")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray")
    parser.add_argument("--child", choices=["ray", "pipe"])
    parser.add_argument("--pipeline", type=Path)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        print(json.dumps(child(args)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict[str, Any]] = {}
    for name in args.pipelines.split(","):
        pipeline = train(name, args.out / "pipelines", args.max_steps)
        corpus, small = args.out / f"{name}-{args.docs}.jsonl", args.out / f"{name}-{args.docs // 10}.jsonl"
        write_corpus(name, args.docs, corpus)
        write_corpus(name, args.docs // 10, small)
        print(f"{name}: {pipeline}", file=sys.stderr, flush=True)
        runs: Dict[str, Any] = {}
        for label, mode, workers, path in [
            ("nlp.pipe", "pipe", 1, corpus),
            ("nlp.pipe(n_process=2)", "pipe", 2, corpus),
            ("ray, 1 worker", "ray", 1, corpus),
            ("ray, 2 workers", "ray", 2, corpus),
            ("ray, 2 workers, 10% of the docs", "ray", 2, small),
        ]:
            output = args.out / f"{name}-{mode}-{workers}-{path.stem}"
            subprocess.run(["rm", "-rf", str(output)], check=True)
            runs[label] = measure(mode, pipeline, path, workers, output)
        results[name] = runs
    (args.out / "ray_annotate.json").write_text(json.dumps(results, indent=2))
    text = report(results, args.docs)
    (args.out / "ray_annotate.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
