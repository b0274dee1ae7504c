"""The subsampled panel the presets were developed on (docs/benchmarks.md):
per split, shuffle with random.Random(0) and keep the first N docs; imdb64 keeps
the first 64 tokens of each review (a short-text sentiment set); goemo_sent is
GoEmotions as binary sentiment (the paper's grouping of the emotions into
positive and negative; comments with labels of both, or only ambiguous or
neutral ones, left out): short sentiment texts; banking77_lt is banking77
with a long tail of rare labels (for multi-label runs, the shape of topic
sets with many rare labels). Run from the repo root: python bench/explore/prep.py [NAME ...]"""
import os
import random
import sys

import spacy
from spacy.tokens import DocBin
nlp = spacy.blank("en")
D = os.environ.get("SHARED_DATA", "../shared/data")
OUT = os.environ.get("EXPLORE_OUT", "bench/results/explore")
spec = {  # name: (src, train, dev, test, truncate)
 "imdb64": ("imdb", 2000, 500, 1000, 64),
 "trec6": ("trec6", None, None, None, None),
 "banking77": ("banking77", 3000, 1000, 1540, None),
 "wnut17": ("wnut17", None, None, None, None),
 "ncbi": ("ncbi_disease", 2500, 923, None, None),
 "btc": ("btc", 3000, 1000, 1000, None),
 "goemo": ("goemotions", 5000, 1000, 2000, None),
 "goemo_sent": ("goemotions", 8000, 1000, 2000, None),
 "banking77_lt": ("banking77", None, None, None, None),
}
POSITIVE = {"admiration", "amusement", "approval", "caring", "desire", "excitement", "gratitude",
            "joy", "love", "optimism", "pride", "relief"}
NEGATIVE = {"anger", "annoyance", "disappointment", "disapproval", "disgust", "embarrassment",
            "fear", "grief", "nervousness", "remorse", "sadness"}


def long_tail(docs, split):
    """banking77 with a long tail of labels, as a newswire topic set has: the
    label of rank k (a fixed shuffle) keeps about 130 / k ** 0.9 of its train
    texts (at least 3), dev a quarter and test a third of that (at least 1 and 2)."""
    labels = sorted({k for d in docs for k, v in d.cats.items() if v > 0.5})
    random.Random(0).shuffle(labels)
    share = {"train": 1.0, "dev": 0.25, "test": 0.3}[split]
    least = {"train": 3, "dev": 1, "test": 2}[split]
    out = []
    for rank, label in enumerate(labels, 1):
        mine = [d for d in docs if d.cats.get(label, 0.0) > 0.5]
        random.Random(rank).shuffle(mine)
        out += mine[:max(least, round(share * 130 / rank ** 0.9))]
    random.Random(0).shuffle(out)
    return out


def sentiment(docs):
    out = []
    for d in docs:
        labels = {k for k, v in d.cats.items() if v > 0.5}
        pos, neg = bool(labels & POSITIVE), bool(labels & NEGATIVE)
        if pos != neg:
            d.cats = {"POSITIVE": float(pos), "NEGATIVE": float(neg)}
            out.append(d)
    return out

for name in sys.argv[1:] or spec:
    src, *lims, trunc = spec[name]
    for split, lim in zip(["train", "dev", "test"], lims):
        docs = list(DocBin().from_disk(f"{D}/{src}/{split}.spacy").get_docs(nlp.vocab))
        if name == "goemo_sent":
            docs = sentiment(docs)
        if name == "banking77_lt":
            docs = long_tail(docs, split)
        if lim and lim < len(docs):
            random.Random(0).shuffle(docs); docs = docs[:lim]
        if trunc:
            out = []
            for d in docs:
                if len(d) > trunc:
                    s = d[:trunc].as_doc(); s.cats = dict(d.cats); d = s
                out.append(d)
            docs = out
        os.makedirs(f"{OUT}/data/{name}", exist_ok=True)
        DocBin(docs=docs, store_user_data=False).to_disk(f"{OUT}/data/{name}/{split}.spacy")
        print(name, split, len(docs), sum(len(d) for d in docs), flush=True)
