"""Resident memory of a training loop, printed every 100 updates: the probe
behind docs/benchmarks.md round 9's finding that our text classifiers'
training RSS grew to gigabytes and then stayed (glibc heap fragmentation;
MALLOC_MMAP_THRESHOLD_=1048576 in the environment avoided it), and round
10's check of the fix (sparse bag gradients, one reused dense buffer).
One torch thread, batches of 16 docs, 2 epochs over the first 4,000 docs.

    python bench/explore/train_memory.py CONFIG.cfg COMPONENT TRAIN.spacy
"""
import random
import resource
import sys

import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_config, minibatch

torch.set_num_threads(1)
config_path, component, train = sys.argv[1:]


def rss_mb() -> str:
    with open("/proc/self/status") as f:
        now = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"RSS {now / 1024:.0f} MB, peak {peak / 1024:.0f} MB"


model = load_config(config_path, interpolate=True)["components"][component]["model"]
nlp = spacy.blank("en")
nlp.add_pipe(component, config={"model": model})
docs = list(DocBin().from_disk(train).get_docs(nlp.vocab))[:4000]
examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
optimizer = nlp.initialize(lambda: examples[:500])
print(f"initialized: {rss_mb()}", flush=True)
random.seed(0)
step = 0
for epoch in range(2):
    random.shuffle(examples)
    for batch in minibatch(examples, 16):
        nlp.update(batch, sgd=optimizer, drop=0.1)
        step += 1
        if step % 100 == 0:
            print(f"update {step}: {rss_mb()}", flush=True)
nlp.evaluate(examples[:1000])
print(f"after evaluate: {rss_mb()}")
