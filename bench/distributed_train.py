"""Data-parallel training speed: words/s of `spacy train` on 1 process (spaCy's
plain loop), 1 rank and N ranks of `spacy_pytorch_shim.data_parallel` (gloo, one
torch thread each), for the same number of global batches; the dev score
reached, and the share of a step spent in the gradient all-reduce.

    flock /tmp/cpu-bench.lock .venv/bin/python bench/distributed_train.py \\
        --data ../shared/data/btc --steps 300 --out bench/results/distributed.md

Words/s counts the words of the global batches (all ranks) of steps 1 to
steps - 1, timed from the loop asking for batch 1 to it asking for the last
one; the dev set is evaluated only after step 0 and the last step, outside
that window. The driver starts one run at a time; each run's rank 0 writes
its figures to a JSON file.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One rank (or the plain one-process loop): train with timing hooks
    around spaCy's batch generator and evaluation callback."""
    import torch

    torch.set_num_threads(1)
    from spacy.training import loop

    from spacy_pytorch_shim.data_parallel import sync

    marks: List[tuple] = []  # (time the loop asked for a batch, words in the global batch, all-reduce seconds so far)
    scores: Dict[str, Any] = {}
    create_batches, create_evaluation = loop.create_train_batches, loop.create_evaluation_callback

    def timed_batches(nlp, corpus, batcher, max_epochs):
        for epoch, batch in create_batches(nlp, corpus, batcher, max_epochs):
            state = sync.active_sync()
            marks.append((time.perf_counter(), sum(len(eg) for eg in batch), state.seconds if state else 0.0))
            yield epoch, batch

    def recorded_evaluation(nlp, dev_corpus, weights):
        evaluate = create_evaluation(nlp, dev_corpus, weights)

        def evaluate_and_record():
            score, other = evaluate()
            scores.update(score=score, ents_f=other.get("ents_f"))
            return score, other

        return evaluate_and_record

    loop.create_train_batches, loop.create_evaluation_callback = timed_batches, recorded_evaluation
    overrides = {
        "paths.train": str(args.data / "train.spacy"),
        "paths.dev": str(args.data / "dev.spacy"),
        "training.max_steps": args.steps,
        "training.eval_frequency": args.steps,
        "training.seed": args.seed,
    }
    if args.batch_words:
        overrides.update(_batch_size_overrides(args.config, args.batch_words))
    if args.plain:
        from spacy import util
        from spacy.training.initialize import init_nlp

        rank, world_size = 0, 1
        nlp = init_nlp(util.load_config(args.config, overrides=overrides, interpolate=False))
        loop.train(nlp, None, stdout=open(os.devnull, "w"))
    else:
        from spacy_pytorch_shim.data_parallel.train import train_rank

        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        train_rank(args.config, None, overrides=overrides)
    if rank == 0:
        # marks[s] is taken when step s starts: steps 1 .. steps-1 lie between marks[1] and marks[-1].
        window = marks[1:-1]
        seconds = marks[-1][0] - marks[1][0]
        words = sum(words for _, words, _ in window)
        sync_seconds = marks[-1][2] - marks[1][2]
        result = {
            "mode": "plain" if args.plain else f"{world_size} rank(s)",
            "world_size": world_size,
            "seed": args.seed,
            "steps": args.steps,
            "words_per_second": words / seconds,
            "all_reduce_share": sync_seconds / seconds,
            "dev_ents_f": scores.get("ents_f"),
        }
        args.result.write_text(json.dumps(result))


def _batch_size_overrides(config: Path, words: int) -> Dict[str, int]:
    """Overrides that make every global batch `words` words: a fixed
    `[training.batcher] size` is replaced, a schedule held at `words`."""
    from thinc.api import Config

    size = Config().from_disk(config, interpolate=False)["training"]["batcher"].get("size")
    if isinstance(size, dict):
        return {"training.batcher.size.start": words, "training.batcher.size.stop": words}
    return {"training.batcher.size": words}


def run(mode: str, args: argparse.Namespace, seed: int, result: Path) -> Dict[str, Any]:
    worker_args = [
        str(Path(__file__).resolve()), "--worker", "--config", str(args.config), "--data", str(args.data),
        "--steps", str(args.steps), "--seed", str(seed), "--result", str(result),
        "--batch-words", str(args.batch_words),
    ]
    if mode == "plain":
        cmd = [sys.executable, *worker_args, "--plain"]
    else:
        from spacy_pytorch_shim.cli.train_distributed import free_port

        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", mode,
            "--master-addr", "127.0.0.1", "--master-port", str(free_port("127.0.0.1")), *worker_args,
        ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    load_before = os.getloadavg()[0]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=args.timeout, stdout=subprocess.DEVNULL)
    # The machine's 1-minute load average around the run: others' processes count too.
    return {**json.loads(result.read_text()), "load": (load_before, os.getloadavg()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ner.cfg")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "btc")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-words", type=int, default=0, help="words per global batch (0: the config's schedule)")
    parser.add_argument("--ranks", default="plain,1,2", help="comma-separated: plain (spaCy's loop, no torch.distributed) and rank counts")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds: each mode runs once per seed")
    parser.add_argument("--out", type=Path, default=None, help="markdown table to write")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for mode in args.ranks.split(","):
                row = run(mode, args, seed, Path(tmp) / f"{mode}-{seed}.json")
                print(json.dumps(row), flush=True)
                rows.append(row)
    baseline = {row["seed"]: row["words_per_second"] for row in rows if row["mode"] == "plain"}
    batches = f"{args.batch_words} words each" if args.batch_words else "the config's batch size schedule"
    lines = [
        f"`{args.config.name}` on `{args.data.name}`, {args.steps} global batches ({batches}), "
        f"{os.cpu_count()} CPUs, one torch thread per process.",
        "",
        "| run | seed | words/s | x plain | all-reduce share of a step | dev ents_f | load avg before/after |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = row["words_per_second"] / baseline[row["seed"]] if row["seed"] in baseline else float("nan")
        f = row["dev_ents_f"]
        lines.append(
            f"| {row['mode']} | {row['seed']} | {row['words_per_second']:.0f} | {speedup:.2f} | "
            f"{100 * row['all_reduce_share']:.1f} % | {f if f is None else f'{f:.3f}'} | "
            f"{row['load'][0]:.1f} / {row['load'][1]:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
