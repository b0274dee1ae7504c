"""Post-hoc logit adjustment for the multi-label component (issue 15,
docs/benchmarks.md): test scores of trained pipelines with each label's logit
raised by TAU * log(negatives / positives) over the training set before the
sigmoid (TAU = 0: as trained). Monotone per label, so macro AUC cannot move;
the 0.5 threshold moves to where the unadjusted probability is
1 / (1 + (neg/pos) ** TAU).

    [CODE=FILE.py] python bench/explore/logit_adjust.py TRAIN.spacy TEST.spacy "TAUS" MODEL_DIR ...
"""
import os
import sys

import numpy
import spacy
from spacy.scorer import Scorer
from spacy.tokens import DocBin
from spacy.training import Example

if os.environ.get("CODE"):  # as spacy's --code: a file defining what the models need
    spacy.util.import_file("code", os.environ["CODE"])
train, test, taus, *models = sys.argv[1:]
for path in models:
    nlp = spacy.load(path)
    pipe = nlp.get_pipe(nlp.pipe_names[-1])
    labels = list(pipe.labels)
    pos = numpy.zeros(len(labels)); seen = numpy.zeros(len(labels))
    for d in DocBin().from_disk(train).get_docs(nlp.vocab):
        for j, label in enumerate(labels):
            if label in d.cats:
                seen[j] += 1; pos[j] += d.cats[label]
    log_odds = numpy.log((seen - pos).clip(1) / pos.clip(1))
    gold = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    docs = [nlp.make_doc(d.text) for d in gold]
    probs = numpy.concatenate([pipe.predict(docs[i:i + 256]) for i in range(0, len(docs), 256)])
    logits = numpy.log(probs.clip(1e-7, 1 - 1e-7) / (1 - probs).clip(1e-7, 1 - 1e-7))
    out = []
    for tau in map(float, taus.split()):
        adjusted = 1 / (1 + numpy.exp(-(logits + tau * log_odds)))
        pred = [nlp.make_doc(d.text) for d in gold]
        for doc, row in zip(pred, adjusted.tolist()):
            doc.cats = dict(zip(labels, row))
        s = Scorer.score_cats([Example(p, g) for p, g in zip(pred, gold)], "cats", labels=labels,
                              multi_label=True, threshold=0.5)
        out.append(f"tau={tau:g} F={s['cats_macro_f']:.4f} AUC={s['cats_macro_auc']:.4f} microF={s['cats_micro_f']:.4f}")
    print(path, " | ".join(out), flush=True)
