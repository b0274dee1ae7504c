"""Inference words/s of trained pipelines on one test set, relative to the
first: `nlp.pipe` over the test texts, one torch thread, 3 interleaved passes
each, median; the garbage collector is off during a pass (with several
pipelines loaded, its full collections otherwise slow whichever runs last).

    python bench/explore/speed.py TEST.spacy MODEL_DIR [MODEL_DIR ...]
"""
import gc
import statistics
import sys
import time

import spacy
import torch
from spacy.tokens import DocBin

torch.set_num_threads(1)
test, *models = sys.argv[1:]
pipelines = {m: spacy.load(m) for m in models}
texts = [d.text for d in DocBin().from_disk(test).get_docs(spacy.blank("en").vocab)]
words = sum(len(t.split()) for t in texts)
runs = {m: [] for m in models}
for _ in range(3):
    for m, nlp in pipelines.items():
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=256))
        runs[m].append(time.perf_counter() - start)
        gc.enable()
first = statistics.median(runs[models[0]])
for m in models:
    median = statistics.median(runs[m])
    print(f"{m}: {words / median:.0f} words/s, {first / median:.2f}x the first")
