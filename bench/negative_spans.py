"""Time one torch_ner update on a long document against the number of its
negative spans (`incorrect_spans_key`): the cost of the negative spans should
not grow with their number.

    .venv/bin/python bench/negative_spans.py [--tokens 10000] [--spans 0 1 10 100] [--repeats 3]
"""
import argparse
import random
import statistics
import time

import spacy
import torch
from spacy.tokens import Span
from spacy.training import Example
from thinc.api import fix_random_seed

LABELS = ["PER", "LOC", "ORG", "MISC"]


def build(n_tokens: int):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_ner", config={"incorrect_spans_key": "neg"})
    words = [random.choice(["alpha", "Beta", "gamma", "Delta", "the", "of", "."]) for _ in range(n_tokens)]
    doc = spacy.tokens.Doc(nlp.vocab, words=words)
    ents = [Span(doc, i, i + 2, LABELS[(i // 50) % len(LABELS)]) for i in range(0, n_tokens - 2, 50)]
    reference = doc.copy()
    reference.ents = [Span(reference, s.start, s.end, s.label_) for s in ents]
    optimizer = nlp.initialize(lambda: [Example(doc.copy(), reference)])
    return nlp, doc, reference, optimizer


def example(doc, reference, n_spans: int) -> Example:
    ref = reference.copy()
    gold = {(e.start, e.end) for e in ref.ents}
    rng = random.Random(n_spans)
    spans = []
    while len(spans) < n_spans:
        start = rng.randrange(len(ref) - 3)
        end = start + rng.randint(1, 3)
        if (start, end) not in gold:
            spans.append(Span(ref, start, end, rng.choice(LABELS)))
    ref.spans["neg"] = spans
    return Example(doc.copy(), ref)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=10000)
    parser.add_argument("--spans", type=int, nargs="+", default=[0, 1, 10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    random.seed(0)
    torch.set_num_threads(1)
    nlp, doc, reference, optimizer = build(args.tokens)
    nlp.update([example(doc, reference, 0)], sgd=optimizer)  # warm-up: not timed
    print(f"one torch_ner update (default model) on one doc of {args.tokens} tokens, median of {args.repeats}")
    print(f"{'negative spans':>15} {'seconds':>9} {'x no spans':>11}")
    base = None
    for n in args.spans:
        eg = example(doc, reference, n)
        times = []
        for _ in range(args.repeats):
            begin = time.perf_counter()
            nlp.update([eg], sgd=optimizer)
            times.append(time.perf_counter() - begin)
        median = statistics.median(times)
        base = base or median
        print(f"{n:>15} {median:>9.3f} {median / base:>11.2f}")


if __name__ == "__main__":
    main()
