"""Score and time trained pipelines on the same test data: one table.

    python scripts/compare_pipelines.py TEST.spacy NAME=PIPELINE [NAME=PIPELINE ...] [--output FILE.md]

Each pipeline is scored with spaCy's scorers (`nlp.evaluate`, as `spacy
evaluate` does) and timed over the test texts with `nlp.pipe` at one torch
thread (a warm-up pass, then the median of `--runs` passes), all in this
process, so the words/s of a teacher and its students compare directly. The
project's `distill-compare` step runs it (project.yml)."""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

# The main score of each component's scorer, in the order shown.
SCORES = ("ents_f", "cats_macro_f", "cats_macro_auc", "cats_score")


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("test", type=Path, help="The test data: a .spacy file")
    p.add_argument("pipelines", nargs="+", help="NAME=PIPELINE: a name for the table and a pipeline directory or package")
    p.add_argument("--runs", type=int, default=3, help="Timed passes over the test texts per pipeline")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", type=Path, default=None, help="Also write the table to this markdown file")
    a = p.parse_args(argv)
    import spacy
    import torch
    from spacy.tokens import DocBin
    from spacy.training import Example

    torch.set_num_threads(1)
    named: Dict[str, str] = {}
    for item in a.pipelines:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"{item!r}: give each pipeline as NAME=PIPELINE")
        named[name] = path
    if not a.test.is_file():
        p.error(f"{a.test}: not found (the test data: a .spacy file)")
    rows = []
    for name, path in named.items():
        nlp = spacy.load(path)
        docs = list(DocBin().from_disk(a.test).get_docs(nlp.vocab))
        scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in docs], batch_size=a.batch_size)
        texts = [d.text for d in docs]
        words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=a.batch_size))  # warm-up
        times = []
        for _ in range(a.runs):
            start = time.perf_counter()
            for _ in nlp.pipe(texts, batch_size=a.batch_size):
                pass
            times.append(time.perf_counter() - start)
        shown = {key: scores[key] for key in SCORES if isinstance(scores.get(key), float)}
        rows.append((name, path, shown, words / statistics.median(times)))
        print(f"{name}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in shown.items()) + f", {rows[-1][3]:,.0f} words/s")
    first_wps = rows[0][3]
    lines = ["| pipeline | scores | words/s (1 thread) | speed vs the first |", "|---|---|---:|---:|"]
    for name, path, shown, wps in rows:
        score = ", ".join(f"{k} {100 * v:.1f}" for k, v in shown.items())
        lines.append(f"| {name} (`{path}`) | {score} | {wps:,.0f} | {wps / first_wps:.1f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(table, encoding="utf8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
