"""Sequential learning of a new label, ours against spaCy's built-ins, in one
run (docs/continual-learning.md).

NER (btc): phase 1 trains on half of the training docs with ORG removed
(PER, LOC); phase 2 adds ORG and trains on the other half with only ORG
annotated. Textcat (banking77): phase 1 on the docs of 67 intents; phase 2
adds the other 10 and trains on their docs only. Systems, each from the same
phase-1 model of its kind:

- ours, learn without forgetting: `learn_without_forgetting.v1` (as `spacy
  train` runs it after sourcing) on the new data, mixed with old examples by
  `RehearsalCorpus.v1` (NER: old text only; textcat: old gold kept);
- ours / spaCy, plain fine-tuning: add the labels, update on the new data;
- spaCy, rehearsal as its docs describe: `nlp.resume_training()`, then per
  batch `nlp.update(new)` and `nlp.rehearse(old raw text)`;
- joint: both phases' data with all labels, from scratch.

Scores on test: old-label and new-label F (NER: micro F over PER+LOC and
ORG F; textcat: macro F over the old and the new intents).

    nice -n 10 python bench/continual.py --out bench/results/continual.md
"""
import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_pytorch_shim.continual import learn_without_forgetting_v1, rehearsal_corpus_v1

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def load(path: Path, nlp, limit: int) -> List:
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    random.Random(0).shuffle(docs)
    return docs[:limit] if limit else docs


def ner_examples(nlp, docs, labels) -> List[Example]:
    out = []
    for doc in docs:
        ref = doc.copy()
        ref.ents = [ent for ent in doc.ents if ent.label_ in labels]
        out.append(Example(nlp.make_doc(doc.text), ref))
    return out


def cats_examples(nlp, docs, labels) -> List[Example]:
    out = []
    for doc in docs:
        positive = max(doc.cats, key=doc.cats.get)
        if positive in labels:
            out.append(Example.from_dict(nlp.make_doc(doc.text), {"cats": {l: float(l == positive) for l in labels}}))
    return out


def train(nlp, examples, epochs: int, *, sgd=None, rehearse: Optional[List[Example]] = None, seed: int = 0):
    """`epochs` passes over `examples` (a list, or a function giving each
    epoch's) in batches of BATCH; with `rehearse`, one `nlp.rehearse` batch
    of those after each update (spaCy's recipe)."""
    rng = random.Random(seed)
    epoch_examples = examples if callable(examples) else lambda: list(examples)
    old = list(rehearse or [])
    for _ in range(epochs):
        examples = epoch_examples()
        rng.shuffle(examples)
        for i in range(0, len(examples), BATCH):
            nlp.update(examples[i:i + BATCH], sgd=sgd, drop=0.1)
            if old:
                nlp.rehearse(rng.sample(old, min(BATCH, len(old))), sgd=sgd)


def rehearsal_reader(nlp, new: List[Example], old: List[Example], ratio: float, gold: bool, tmp: Path):
    """RehearsalCorpus.v1 over this new and old data: each call one epoch."""
    for name, examples in (("new", new), ("old", old)):
        DocBin(docs=[eg.reference for eg in examples]).to_disk(tmp / f"{name}.spacy")
    corpus = rehearsal_corpus_v1(tmp / "new.spacy", tmp / "old.spacy", rehearsal_ratio=ratio, rehearsal_gold=gold)
    return lambda: list(corpus(nlp))


def ner_f(nlp, docs, labels) -> float:
    gold = {(i, e.start_char, e.end_char, e.label_) for i, d in enumerate(docs) for e in d.ents if e.label_ in labels}
    pred = {(i, e.start_char, e.end_char, e.label_) for i, d in enumerate(nlp.pipe(d.text for d in docs))
            for e in d.ents if e.label_ in labels}
    tp = len(gold & pred)
    return 2 * tp / (len(gold) + len(pred)) if gold or pred else 0.0


def macro_f(nlp, docs, labels) -> float:
    gold = [max(d.cats, key=d.cats.get) for d in docs]
    pred = [max(d.cats, key=d.cats.get) if d.cats else None for d in nlp.pipe(d.text for d in docs)]
    fs = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, pred))
        n_gold, n_pred = gold.count(label), pred.count(label)
        fs.append(2 * tp / (n_gold + n_pred) if n_gold + n_pred else 0.0)
    return sum(fs) / len(fs)


def run_task(task: str, args, seed: int) -> List[Dict]:
    data = Path(args.data_dir) / ("btc" if task == "ner" else "banking77")
    blank = spacy.blank("en")
    train_docs = load(data / "train.spacy", blank, args.limit)
    test_docs = load(data / "test.spacy", blank, args.test_limit)
    if task == "ner":
        old_labels, new_labels = ["PER", "LOC"], ["ORG"]
        half = len(train_docs) // 2
        make = ner_examples
        old_docs, new_docs = train_docs[:half], train_docs[half:]
        score = ner_f
        factories = {"ours": "torch_ner", "spacy": "ner"}
        epochs1, epochs2 = args.ner_epochs, args.ner_epochs_new
        ratio, gold_rehearsal = args.ner_rehearsal_ratio, False
    else:
        labels = sorted(train_docs[0].cats)
        rng = random.Random(0)
        new_labels = sorted(rng.sample(labels, 10))
        old_labels = [l for l in labels if l not in new_labels]
        make = cats_examples
        old_docs = new_docs = train_docs
        score = macro_f
        factories = {"ours": "torch_textcat", "spacy": "textcat"}
        epochs1, epochs2 = args.textcat_epochs, args.textcat_epochs_new
        ratio, gold_rehearsal = args.textcat_rehearsal_ratio, True
    all_labels = old_labels + new_labels
    rows = []

    def scores(nlp) -> Dict[str, float]:
        return {"old": score(nlp, test_docs, old_labels), "new": score(nlp, test_docs, new_labels)}

    for kind, factory in factories.items():
        if kind not in args.systems.split(","):
            continue
        fix_random_seed(seed)
        nlp = spacy.blank("en")
        nlp.add_pipe(factory)
        old_train = make(nlp, old_docs, old_labels)
        new_train = make(nlp, new_docs, new_labels)
        t0 = time.time()
        if factory == "textcat":
            # spaCy's textcat cannot add labels once initialized (E922): it
            # gets every label up front, the new ones unseen in phase 1.
            for label in all_labels:
                nlp.get_pipe(factory).add_label(label)
        nlp.initialize(lambda: old_train)
        train(nlp, old_train, epochs1, seed=seed)
        before = scores(nlp)
        rows.append({"task": task, "seed": seed, "system": f"{kind}: phase 1 (old labels)", **before, "s": time.time() - t0})
        print(json.dumps(rows[-1]), flush=True)
        phase1 = nlp.to_bytes()
        variants = ["plain fine-tuning", "learn without forgetting" if kind == "ours" else "resume_training + rehearse"]
        for variant in variants:
            fix_random_seed(seed)
            student = spacy.blank("en")
            student.add_pipe(factory)
            student.from_bytes(phase1)
            pipe = student.get_pipe(factory)
            student_new = make(student, new_docs, new_labels)
            student_old = make(student, old_docs, old_labels)
            t0 = time.time()
            sgd = student.resume_training()
            if variant == "learn without forgetting":
                learn_without_forgetting_v1(new_labels={factory: new_labels})(student)
                with tempfile.TemporaryDirectory() as tmp:
                    examples = rehearsal_reader(student, student_new, student_old, ratio, gold_rehearsal, Path(tmp))
                    train(student, examples, epochs2, sgd=sgd, seed=seed)
            else:
                for label in new_labels:
                    if label not in pipe.labels:
                        pipe.add_label(label)
                rehearse = None
                if variant.startswith("resume"):
                    rehearse = [Example.from_dict(eg.predicted, {}) for eg in student_old]
                train(student, student_new, epochs2, sgd=sgd, rehearse=rehearse, seed=seed)
            after = scores(student)
            rows.append({"task": task, "seed": seed, "system": f"{kind}: {variant}", **after, "s": time.time() - t0,
                         "old_drop": before["old"] - after["old"]})
            print(json.dumps(rows[-1]), flush=True)
        fix_random_seed(seed)
        joint = spacy.blank("en")
        joint.add_pipe(factory)
        joint_train = make(joint, train_docs, all_labels)
        t0 = time.time()
        joint.initialize(lambda: joint_train)
        train(joint, joint_train, epochs1, seed=seed)
        rows.append({"task": task, "seed": seed, "system": f"{kind}: joint (all labels)", **scores(joint), "s": time.time() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: List[Dict], args) -> str:
    """One line per task and system: the median over the seeds, [min-max]
    where there are several; the new-label ratio is per seed, to the joint
    model of the same seed."""
    seeds = sorted({row["seed"] for row in rows})
    lines = [
        f"Command: `{' '.join(sys.argv)}` (torch threads {torch.get_num_threads()}, seeds {','.join(map(str, seeds))}; "
        "median [min-max] over the seeds).", "",
        "| task | system | old-label F | new-label F | old F drop | new F / joint's | seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def cell(values, fmt="{:.1f}"):
        if not values:
            return ""
        text = fmt.format(statistics.median(values))
        return text if len(values) == 1 else f"{text} [{fmt.format(min(values))}-{fmt.format(max(values))}]"

    systems = list(dict.fromkeys((row["task"], row["system"]) for row in rows))
    for task, system in systems:
        group = [row for row in rows if row["task"] == task and row["system"] == system]
        kind = system.split(":")[0]
        drops, ratios = [], []
        for row in group:
            if "old_drop" not in row:
                continue
            drops.append(100 * row["old_drop"])
            joint = next(r for r in rows if r["task"] == task and r["seed"] == row["seed"]
                         and r["system"] == f"{kind}: joint (all labels)")
            if joint["new"]:
                ratios.append(100 * row["new"] / joint["new"])
        lines.append(
            f"| {task} | {system} | {cell([100 * r['old'] for r in group])} | {cell([100 * r['new'] for r in group])} "
            f"| {cell(drops)} | {cell(ratios, '{:.0f} %')} | {statistics.median(r['s'] for r in group):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--tasks", default="ner,textcat")
    parser.add_argument("--systems", default="ours,spacy")
    parser.add_argument("--limit", type=int, default=0, help="training docs (0: all), before the split")
    parser.add_argument("--test-limit", type=int, default=0)
    parser.add_argument("--ner-epochs", type=int, default=5)
    parser.add_argument("--ner-epochs-new", type=int, default=3)
    parser.add_argument("--textcat-epochs", type=int, default=5)
    parser.add_argument("--textcat-epochs-new", type=int, default=12,
                        help="phase-2 epochs; 12 over the ~390 new docs and their rehearsed old ones give about as "
                             "many updates as joint training's 5 over all docs (Adam moves a weight ~lr per update, "
                             "so a new class needs the updates, not only the examples)")
    parser.add_argument("--ner-rehearsal-ratio", type=float, default=1.0, help="old text examples per new one")
    parser.add_argument("--textcat-rehearsal-ratio", type=float, default=2.0, help="old gold examples per new one")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (the data split is fixed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for task in args.tasks.split(","):
            rows.extend(run_task(task, args, seed))
    text = markdown(rows, args)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf8")


if __name__ == "__main__":
    main()
