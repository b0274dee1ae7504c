"""Cost of adding labels one by one to an initialized torch component.

Each `add_label` after initialization used to resize the output layers (for
`torch_textcat*` the 65536-row bag of n-grams) and their optimizer state:
quadratic in the number of labels (100 labels 3.5 s, 500 about 90 s). Now the
resize is deferred to the next use of the model, so N labels cost N list
appends and one resize.

    flock /tmp/cpu-bench.lock .venv/bin/python bench/add_labels.py --labels 500

Reports, per component (default configs), the time of N add_label calls, of
the first prediction after them (which does the one resize), and the slowest
single add_label call.
"""
import argparse
import time

import spacy
import torch
from spacy.training import Example

FACTORIES = ["torch_textcat", "torch_textcat_multilabel", "torch_ner"]


def measure(factory: str, n_labels: int) -> dict:
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory)
    doc = nlp.make_doc("Alice likes Paris")
    if factory == "torch_ner":
        eg = Example.from_dict(doc, {"entities": [(0, 5, "PER")]})
    else:
        eg = Example.from_dict(doc, {"cats": {"A": 1.0, "B": 0.0}})
    nlp.initialize(lambda: [eg])
    slowest = 0.0
    start = time.perf_counter()
    for i in range(n_labels):
        t = time.perf_counter()
        pipe.add_label(f"LABEL_{i}")
        slowest = max(slowest, time.perf_counter() - t)
    added = time.perf_counter() - start
    t = time.perf_counter()
    nlp("Alice likes Paris")
    first_use = time.perf_counter() - t
    return {"add": added, "first_use": first_use, "slowest": slowest, "total": added + first_use}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--factories", default=",".join(FACTORIES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| component | {args.labels} add_label (s) | first predict after (s) | slowest add_label (ms) | total (s) |")
    print("|---|---|---|---|---|")
    for factory in args.factories.split(","):
        r = measure(factory, args.labels)
        print(f"| {factory} | {r['add']:.3f} | {r['first_use']:.3f} | {1000 * r['slowest']:.2f} | {r['total']:.3f} |")


if __name__ == "__main__":
    main()
