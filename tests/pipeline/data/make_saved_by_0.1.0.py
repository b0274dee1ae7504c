"""Writes tests/pipeline/data/saved-by-0.1.0 with the code of commit 25f4c05."""
import json, sys, spacy
from spacy.training import Example
from thinc.api import Adam
out = sys.argv[1]
T2V = {"width": 8, "rows": [50, 20, 20, 20], "encoder": {"width": 8, "depth": 1}}
nlp = spacy.blank("en")
nlp.add_pipe("torch_ner", name="ner", config={"model": {"tok2vec": T2V, "hidden_width": 8}})
nlp.add_pipe("torch_textcat", name="textcat", config={"model": {"tok2vec": T2V, "hidden_width": 8, "ngram_rows": 64}})
texts = ["Alice lives in Paris", "Bob hates London"]
egs = [Example.from_dict(nlp.make_doc(texts[0]), {"entities": [(0, 5, "PER"), (15, 20, "LOC")], "cats": {"POS": 1.0, "NEG": 0.0}}),
       Example.from_dict(nlp.make_doc(texts[1]), {"entities": [(0, 3, "PER"), (10, 16, "LOC")], "cats": {"POS": 0.0, "NEG": 1.0}})]
opt = nlp.initialize(lambda: egs)
for _ in range(5): nlp.update(egs, sgd=Adam(0.01))
nlp.get_pipe("textcat").add_label("EXTRA")
nlp.to_disk(out)
docs = [nlp(t) for t in texts]
json.dump({"texts": texts, "cats": [d.cats for d in docs], "ents": [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]}, open(out + "/expected.json", "w"), indent=1)
