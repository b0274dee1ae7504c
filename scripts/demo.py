"""Demo: train, evaluate and use two torch pipelines with the ordinary spaCy CLI.

Run it from a checkout as ``make demo`` or ``python scripts/demo.py``: it
uses the checkout's ``configs/`` and ``data/`` samples (the installed package
ships the configs, not the data). It

1. trains an NER pipeline (``configs/ner.cfg``, component ``torch_ner``) on
   ``data/btc-sample`` (English tweets; PER, ORG, LOC) and an exclusive text
   classifier (``configs/textcat.cfg``, component ``torch_textcat``) on
   ``data/banking77-sample`` (77 banking intents) with ``python -m spacy
   train``, in subprocesses, so spaCy's own training table streams to the
   terminal;
2. evaluates each ``model-best`` on the test split with ``python -m spacy
   evaluate``;
3. loads both pipelines with ``spacy.load`` and prints predictions for a few
   example texts (entities; the top three intents);
4. prints a summary: test scores, training times and where the pipelines are.

The default number of epochs keeps the whole run to a few minutes on two CPU
cores. It exits with a non-zero status if any step fails.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

NER_EXAMPLES = [
    "Barack Obama and Angela Merkel met in Berlin this morning",
    "Just landed in London , off to the Google office with Sarah",
    "Manchester United beat Chelsea at Old Trafford last night",
    "Huge thanks to the BBC for having me on the show today !",
]
TEXTCAT_EXAMPLES = [
    "I still haven't received my new card, when will it arrive?",
    "Why was I charged a fee for taking cash out of an ATM?",
    "My top-up didn't go through, what happened to my money?",
    "How do I change my PIN?",
]


class DemoError(RuntimeError):
    pass


def find_root(explicit: Optional[str]) -> Path:
    """The directory with configs/ and data/: --root, else the checkout this
    script is in."""
    root = Path(explicit) if explicit else Path(__file__).resolve().parents[1]
    if not ((root / "configs" / "ner.cfg").exists() and (root / "data" / "btc-sample").exists()):
        raise DemoError(f"Cannot find configs/ner.cfg and data/btc-sample in {root}; pass --root.")
    return root.resolve()


def banner(text: str) -> None:
    line = "=" * 78
    print(f"\n{line}\n{text}\n{line}", flush=True)


def run(cmd: List[str], env: Dict[str, str]) -> float:
    """Run a command with its output streaming to our terminal; seconds taken."""
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise DemoError(f"command failed with exit status {result.returncode}: {' '.join(map(str, cmd))}")
    return seconds


def train_and_evaluate(task: dict, root: Path, out_root: Path, env: Dict[str, str], eval_frequency: int) -> dict:
    output = out_root / task["name"]
    data = root / "data" / task["sample"]
    banner(f"Training {task['title']}: configs/{task['config']} on data/{task['sample']} ({task['epochs']} epochs)")
    train_s = run(
        [
            sys.executable, "-m", "spacy", "train", root / "configs" / task["config"],
            "--output", output,
            "--paths.train", data / "train.spacy",
            "--paths.dev", data / "dev.spacy",
            "--training.max_epochs", str(task["epochs"]),
            "--training.max_steps", "0",
            "--training.eval_frequency", str(eval_frequency),
        ],
        env,
    )
    best = output / "model-best"
    if not (best / "meta.json").exists():
        raise DemoError(f"spacy train finished but wrote no pipeline to {best}")

    banner(f"Evaluating {task['title']} on data/{task['sample']}/test.spacy")
    scores_path = output / "test-scores.json"
    run([sys.executable, "-m", "spacy", "evaluate", best, data / "test.spacy", "--output", scores_path], env)
    scores = json.loads(scores_path.read_text(encoding="utf8"))
    missing = [key for key in task["score_keys"] if scores.get(key) is None]
    if missing:
        raise DemoError(f"spacy evaluate reported no {', '.join(missing)} for {best}")
    return {"path": best, "train_s": train_s, "scores": scores}


def show_predictions(ner_path: Path, textcat_path: Path) -> None:
    import spacy

    banner("Predictions (spacy.load on model-best)")
    nlp = spacy.load(ner_path)
    print(f"NER pipeline {nlp.pipe_names} from {ner_path}")
    for doc in nlp.pipe(NER_EXAMPLES):
        ents = ", ".join(f"{ent.text!r} {ent.label_}" for ent in doc.ents) or "(no entities)"
        print(f"  {doc.text}\n    -> {ents}")
    nlp = spacy.load(textcat_path)
    print(f"\nText classification pipeline {nlp.pipe_names} from {textcat_path}")
    for doc in nlp.pipe(TEXTCAT_EXAMPLES):
        top = sorted(doc.cats.items(), key=lambda kv: kv[1], reverse=True)[:3]
        print(f"  {doc.text}\n    -> " + ", ".join(f"{label} {score:.2f}" for label, score in top))
    sys.stdout.flush()


def pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ner-epochs", type=int, default=4, help="epochs over data/btc-sample/train.spacy")
    parser.add_argument("--textcat-epochs", type=int, default=5, help="epochs over data/banking77-sample/train.spacy")
    parser.add_argument("--eval-frequency", type=int, default=100, help="steps between evaluations on dev")
    parser.add_argument("--output", default=None, help="where the pipelines go (default: <root>/training)")
    parser.add_argument("--root", default=None, help="the repository root with configs/ and data/ (default: this checkout)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        root = find_root(args.root)
        out_root = Path(args.output).resolve() if args.output else root / "training"
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # the training table streams even through a pipe
        tasks = [
            {
                "name": "ner", "title": "torch_ner (named entities)", "config": "ner.cfg",
                "sample": "btc-sample", "epochs": args.ner_epochs,
                "score_keys": ["ents_f", "ents_p", "ents_r"],
            },
            {
                "name": "textcat", "title": "torch_textcat (77 intents)", "config": "textcat.cfg",
                "sample": "banking77-sample", "epochs": args.textcat_epochs,
                "score_keys": ["cats_score", "cats_macro_auc"],
            },
        ]
        results = {task["name"]: train_and_evaluate(task, root, out_root, env, args.eval_frequency) for task in tasks}
        show_predictions(results["ner"]["path"], results["textcat"]["path"])
    except DemoError as err:
        print(f"\ndemo failed: {err}", file=sys.stderr, flush=True)
        return 1

    ner, tc = results["ner"], results["textcat"]
    banner(f"Summary (total {time.perf_counter() - start:.0f} s)")
    s = ner["scores"]
    print(
        f"NER      data/btc-sample test: ents F {pct(s['ents_f'])}  P {pct(s['ents_p'])}  R {pct(s['ents_r'])}"
        f"  | trained {args.ner_epochs} epochs in {ner['train_s']:.0f} s | {s.get('speed', 0):.0f} words/s"
    )
    per_type = s.get("ents_per_type") or {}
    if per_type:
        print("         per type F: " + ", ".join(f"{k} {pct(v['f'])}" for k, v in sorted(per_type.items())))
    s = tc["scores"]
    print(
        f"TEXTCAT  data/banking77-sample test: macro F {pct(s['cats_score'])}  macro AUC {pct(s['cats_macro_auc'])}"
        f"  | trained {args.textcat_epochs} epochs in {tc['train_s']:.0f} s | {s.get('speed', 0):.0f} words/s"
    )
    print(f"\nPipelines: {ner['path']}\n           {tc['path']}")
    print("Load one with spacy.load(path); test scores are in test-scores.json next to model-best.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
