"""Write the small demo samples in data/ from the full sets in ../shared/data.

    python scripts/make_sample.py                # from the repository root
    python scripts/make_sample.py --src PATH --out PATH

Only sets whose licence allows redistribution are sampled: btc and banking77
(CC BY 4.0) and goemotions (Apache-2.0). trec6 has no stated licence and is
never shipped.

Selection is deterministic and keeps the source order:

* btc, goemotions: evenly spaced docs, index `i * len(split) // n` for
  `i = 0 .. n-1`, so every part of the source file is represented (btc's
  files are ordered by collection section).
* banking77: the source files are sorted by intent, so docs are taken round
  robin over the intents (the 1st doc of every intent, then the 2nd, ...)
  until n are chosen; every intent with enough docs is represented.

Each sample also has `unlabelled.jsonl`: the texts (one `{"text": ...}` per
line) of UNLABELLED evenly spaced docs of the source training split that
are not in the sample's, for distillation (docs/distillation.md).

Docs are copied unchanged (same tokens, entities and `doc.cats`) into
`DocBin(store_user_data=False)` files with the source's attributes. spaCy
sorts the strings table when writing, so the output is byte-identical from
run to run. The script also writes data/README.md with the attribution, the
counts and sha256 sums. data/goemotions-sample/LICENSE (the Apache-2.0 text)
is a static file, not written here.
"""
import argparse
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import spacy
from spacy.tokens import Doc, DocBin

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")
UNLABELLED = 1000

SAMPLES = {
    "btc-sample": {
        "source": "btc",
        "sizes": {"train": 1500, "dev": 300, "test": 300},
        "select": "spread",
        "task": "NER, English tweets; labels PER, ORG, LOC",
    },
    "banking77-sample": {
        "source": "banking77",
        "sizes": {"train": 2000, "dev": 400, "test": 400},
        "select": "per_label",
        "task": "exclusive text classification, 77 banking intents",
    },
    "goemotions-sample": {
        "source": "goemotions",
        "sizes": {"train": 1500, "dev": 300, "test": 300},
        "select": "spread",
        "task": "multi-label text classification, 27 emotions + neutral",
    },
}

ATTRIBUTION = {
    "btc": """\
### btc-sample: Broad Twitter Corpus (CC BY 4.0)

Attribution: the data comes from the Broad Twitter Corpus by Derczynski,
Bontcheva and Roberts (CC BY 4.0). We changed the format to spaCy DocBin and
applied the whitespace clean-up described below.

Licence: CC BY 4.0, https://creativecommons.org/licenses/by/4.0/. Changes:
the whitespace clean-up strips whitespace around tokens, drops tokens that are
empty after stripping (all tagged `O`) and drops the one tweet left empty. On
top of the conversion, this sample is a subset of each split, chosen by
`scripts/make_sample.py`; the docs themselves are unchanged.

* Source: https://github.com/GateNLP/broad_twitter_corpus, commit
  `0c45ef7b1924a6b8115bceab388781590b1b553a`, files
  `train_dev_test_conll/btc.{train,dev,test}` (the split recommended by the
  corpus README: test = section F, dev = second half of H, train = A, B, E, G
  and the first half of H).
* Citation: Leon Derczynski, Kalina Bontcheva, Ian Roberts. *Broad Twitter
  Corpus: A Diverse Named Entity Recognition Resource.* COLING 2016,
  pp. 1169-1179.
* Docs: one per tweet, the corpus's own tokens, entities in `doc.ents`, every
  other token explicitly `O`; `doc.cats` is empty.
""",
    "banking77": """\
### banking77-sample: BANKING77 (CC BY 4.0)

Attribution: the data comes from BANKING77 by PolyAI (CC BY 4.0). We changed
the format to spaCy DocBin and carved a dev split out of train.

Licence: CC BY 4.0, https://creativecommons.org/licenses/by/4.0/. Changes:
texts tokenized with `spacy.blank("en")`; the dev split is 1,000 rows of the
source's `train.csv` chosen with `random.Random(0)`, test is `test.csv`. On
top of the conversion, this sample is a subset of each split, chosen by
`scripts/make_sample.py`; the docs themselves are unchanged.

* Source: https://github.com/PolyAI-LDN/task-specific-datasets, commit
  `57ec275d8078af65b7731c2a98be812d844a6d6b`, files
  `banking_data/{train,test}.csv` and `banking_data/categories.json`.
* Citation: Iñigo Casanueva, Tadas Temčinas, Daniela Gerz, Matthew Henderson,
  Ivan Vulić. *Efficient Intent Detection with Dual Sentence Encoders.*
  NLP4ConvAI workshop 2020 (arXiv:2003.04807).
* Docs: `doc.cats` holds all 77 intents, 1.0 for the gold intent and 0.0 for
  the rest. Label names are kept as in the source, including
  `Refund_not_showing_up` and `reverted_card_payment?`.
""",
    "goemotions": """\
### goemotions-sample: GoEmotions (Apache-2.0)

Attribution: the data comes from GoEmotions by Demszky et al. (Google
Research, Apache-2.0). We changed only the format, to spaCy DocBin.

Licence: Apache License 2.0; a copy is in `goemotions-sample/LICENSE`.
Changes: texts tokenized with `spacy.blank("en")`; the source splits are kept.
On top of the conversion, this sample is a subset of each split, chosen by
`scripts/make_sample.py`; the docs themselves are unchanged.

* Source: https://github.com/google-research/google-research,
  `goemotions/data/{train,dev,test}.tsv` and `emotions.txt` (the "simplified"
  release), taken from the byte-identical copy in
  https://github.com/monologg/GoEmotions-pytorch, commit
  `b75f9d3a8b76bc1060687925b04ca98a1b8ea66b`, `data/original/`.
* Citation: Dorottya Demszky, Dana Movshovitz-Attias, Jeongwoo Ko, Alan Cowen,
  Gaurav Nemade, Sujith Ravi. *GoEmotions: A Dataset of Fine-Grained
  Emotions.* ACL 2020.
* Docs: Reddit comments (the source masks names and religions as `[NAME]` and
  `[RELIGION]`); `doc.cats` holds all 28 labels with 1.0 or 0.0, at least one
  1.0 per doc.
""",
}


def select_spread(n_total: int, n: int) -> List[int]:
    n = min(n, n_total)
    return [i * n_total // n for i in range(n)]


def select_per_label(docs: Sequence[Doc], n: int) -> List[int]:
    by_label: Dict[str, List[int]] = defaultdict(list)
    for i, doc in enumerate(docs):
        by_label[gold_labels(doc)[0]].append(i)
    chosen: List[int] = []
    rank = 0
    while len(chosen) < min(n, len(docs)):
        for label in by_label:  # in order of first appearance
            if rank < len(by_label[label]) and len(chosen) < n:
                chosen.append(by_label[label][rank])
        rank += 1
    return sorted(chosen)


def gold_labels(doc: Doc) -> List[str]:
    return [label for label, value in doc.cats.items() if value == 1.0]


def describe(docs: Sequence[Doc]) -> Dict[str, object]:
    info: Dict[str, object] = {
        "docs": len(docs),
        "tokens": sum(len(d) for d in docs),
    }
    if any(d.ents for d in docs):
        ents = Counter(e.label_ for d in docs for e in d.ents)
        info["entities"] = sum(ents.values())
        info["per_label"] = dict(sorted(ents.items()))
    if docs and docs[0].cats:
        labels = list(docs[0].cats)
        counts = Counter(label for d in docs for label in gold_labels(d))
        info["labels"] = len(labels)
        info["labels_present"] = sum(1 for label in labels if counts[label])
        info["min_per_label"] = min(counts[label] for label in labels)
        info["max_per_label"] = max(counts[label] for label in labels)
        info["multi_label_docs"] = sum(1 for d in docs if len(gold_labels(d)) > 1)
    return info


def make_sample(src: Path, out: Path, name: str, spec: dict, nlp) -> Dict[str, dict]:
    results = {}
    (out / name).mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        source_bin = DocBin().from_disk(src / spec["source"] / f"{split}.spacy")
        docs = list(source_bin.get_docs(nlp.vocab))
        n = spec["sizes"][split]
        if spec["select"] == "spread":
            indices = select_spread(len(docs), n)
        else:
            indices = select_per_label(docs, n)
        chosen = [docs[i] for i in indices]
        target = DocBin(attrs=source_bin.attrs, store_user_data=False)
        for doc in chosen:
            target.add(doc)
        path = out / name / f"{split}.spacy"
        target.to_disk(path)
        data = path.read_bytes()
        info = describe(chosen)
        info.update(
            source_docs=len(docs),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        results[split] = info
        print(f"{path}: {info['docs']} of {len(docs)} docs, {len(data):,} bytes")
        if split == "train":
            taken = set(indices)
            rest = [doc for i, doc in enumerate(docs) if i not in taken]
            results["unlabelled"] = write_unlabelled(out / name / "unlabelled.jsonl", rest)
    return results


def write_unlabelled(path: Path, docs: Sequence[Doc]) -> Dict[str, object]:
    """The texts of UNLABELLED evenly spaced `docs`, as .jsonl."""
    chosen = [docs[i] for i in select_spread(len(docs), UNLABELLED)]
    data = "".join(json.dumps({"text": doc.text}) + "\n" for doc in chosen).encode("utf8")
    path.write_bytes(data)
    print(f"{path}: {len(chosen)} of {len(docs)} texts, {len(data):,} bytes")
    return {"docs": len(chosen), "source_docs": len(docs), "tokens": sum(len(d) for d in chosen),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def readme(stats: Dict[str, Dict[str, dict]]) -> str:
    total = sum(info["bytes"] for sample in stats.values() for info in sample.values())
    lines = [
        "# Demo data samples",
        "",
        "Small samples of public, redistributable datasets, for the demo, the",
        "docs and quick experiments. They are spaCy 3 `DocBin` files; load one",
        "like this:",
        "",
        "```python",
        "import spacy",
        "from spacy.tokens import DocBin",
        'nlp = spacy.blank("en")',
        'docs = list(DocBin().from_disk("data/btc-sample/train.spacy").get_docs(nlp.vocab))',
        "```",
        "",
        "Regenerate them, byte for byte, from the full converted sets in",
        "`../shared/data` with:",
        "",
        "```",
        "python scripts/make_sample.py",
        "```",
        "",
        "Selection (see the script): btc and goemotions take evenly spaced docs",
        "(index `i * len(split) // n`), banking77 takes docs round robin over the",
        "intents, because its source files are sorted by intent. Docs are copied",
        "unchanged; the source order is kept. `unlabelled.jsonl` holds the texts",
        f"of {UNLABELLED:,} evenly spaced docs of the source training split that are",
        "not in the sample's, without their labels: unlabelled text of the same",
        "domain for distillation (`docs/distillation.md`).",
        "",
        f"Total size: {total:,} bytes.",
        "",
        "| sample | task | split | docs (of source) | tokens | labels | bytes | sha256 |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for name, sample in stats.items():
        task = SAMPLES[name]["task"]
        for split, info in sample.items():
            if split == "unlabelled":
                labels = "none (texts only, `unlabelled.jsonl`)"
            elif "entities" in info:
                per = ", ".join(f"{k} {v:,}" for k, v in info["per_label"].items())
                labels = f"{info['entities']:,} entities ({per})"
            else:
                labels = (
                    f"{info['labels_present']}/{info['labels']} labels present, "
                    f"{info['min_per_label']}-{info['max_per_label']} docs per label"
                )
                if info["multi_label_docs"]:
                    labels += f", {info['multi_label_docs']} docs with >1 label"
            lines.append(
                f"| `{name}` | {task} | {split} | {info['docs']:,} ({info['source_docs']:,})"
                f" | {info['tokens']:,} | {labels} | {info['bytes']:,}"
                f" | `{info['sha256'][:12]}…` |"
            )
    lines += [
        "",
        "## Sources, licences and attribution",
        "",
        "Each sample is a subset of a dataset released by others under the",
        "licence named below; the samples keep that licence (they are not",
        "covered by this package's MIT licence). Credit the sources as below",
        "when you redistribute them.",
        "",
    ]
    for name, spec in SAMPLES.items():
        lines.append(ATTRIBUTION[spec["source"]])
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "data")
    args = parser.parse_args()
    if not args.src.exists():
        raise SystemExit(f"source data not found: {args.src}")
    nlp = spacy.blank("en")
    stats = {name: make_sample(args.src, args.out, name, spec, nlp) for name, spec in SAMPLES.items()}
    (args.out / "README.md").write_text(readme(stats), encoding="utf-8")
    licence = args.out / "goemotions-sample" / "LICENSE"
    if not licence.exists():
        # Apache-2.0 asks redistributors to include the licence text; it is a
        # static file in the repository (data/goemotions-sample/LICENSE)
        print(f"WARNING: copy the Apache-2.0 licence text to {licence}")
    print(f"wrote {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
