"""The Hugging Face encoder in pipelines: as the tok2vec of each torch
component, shared through spaCy's tok2vec component and listeners (one
encoder pass per batch for all of them), and under spaCy's own ner."""
import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from tiny_encoders import DATA, WIDTH

SAMPLES = {"torch_ner": "btc-sample", "torch_textcat": "banking77-sample", "torch_textcat_multilabel": "goemotions-sample"}


def hf_encoder(path):
    return {"@architectures": "spacy-pytorch-shim.HFEncoder.v1", "name": str(path), "width": WIDTH}


def listener():
    return {"@architectures": "spacy.Tok2VecListener.v1", "width": WIDTH, "upstream": "*"}


def head(factory, tok2vec):
    if factory == "torch_ner":
        return {"@architectures": "spacy-pytorch-shim.TorchNERTagger.v2", "hidden_width": 0, "tok2vec": tok2vec}
    return {
        "@architectures": "spacy-pytorch-shim.TorchTextCat.v3",
        "exclusive_classes": factory == "torch_textcat",
        "hidden_width": 16,
        "ngram_rows": 1024,
        "tok2vec": tok2vec,
    }


def examples(nlp, factory, n=12):
    docs = list(DocBin().from_disk(DATA / SAMPLES[factory] / "train.spacy").get_docs(nlp.vocab))[:n]
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


@pytest.mark.parametrize("factory", list(SAMPLES))
def test_each_torch_component_trains_saves_and_loads_with_the_encoder(factory, encoder_dir, tmp_path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe(factory, config={"model": head(factory, hf_encoder(encoder_dir("roberta")))})
    egs = examples(nlp, factory)
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.001)
    losses = [nlp.update(egs, sgd=optimizer, drop=0.1)[factory] for _ in range(4)]
    assert losses[-1] < losses[0]
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    docs = [eg.predicted for eg in egs[:4]]
    for a, b in zip(loaded.get_pipe(factory).model.predict(docs), nlp.get_pipe(factory).model.predict(docs)):
        numpy.testing.assert_array_equal(a, b)


def test_components_share_one_encoder_pass_per_batch_through_listeners(encoder_dir, tmp_path):
    """spaCy's tok2vec component holds the encoder; torch_ner, torch_textcat
    and spaCy's ner listen to it: one encoder pass per update and per batch
    predicted, and the pipeline saves and loads."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec", config={"model": hf_encoder(encoder_dir("bert"))})
    nlp.add_pipe("torch_ner", config={"model": head("torch_ner", listener())})
    nlp.add_pipe("torch_textcat_multilabel", config={"model": head("torch_textcat_multilabel", listener())})
    nlp.add_pipe("ner", name="spacy_ner", config={"model": {
        "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False,
        "hidden_width": 16, "maxout_pieces": 2, "use_upper": True, "nO": None, "tok2vec": listener()}})
    ner = examples(nlp, "torch_ner")
    for eg in ner:  # multi-label gold for the same docs
        eg.reference.cats = {"A": float(len(eg.reference) % 2), "B": float(len(eg.reference) % 3 == 0)}
    nlp.initialize(lambda: ner)
    encoder = nlp.get_pipe("tok2vec").model.shims[0].module
    passes = []
    encoder.register_forward_hook(lambda *_: passes.append(1))
    optimizer = Adam(0.001)
    for step in range(2):
        losses = nlp.update(ner, sgd=optimizer, drop=0.1)
        assert len(passes) == step + 1
    assert set(losses) == {"tok2vec", "torch_ner", "torch_textcat_multilabel", "spacy_ner"}
    passes.clear()
    docs = list(nlp.pipe([eg.predicted.text for eg in ner], batch_size=100))
    assert len(passes) == 1
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    for doc, again in zip(docs, loaded.pipe([d.text for d in docs])):
        assert [(e.text, e.label_) for e in doc.ents] == [(e.text, e.label_) for e in again.ents]
        assert doc.cats == pytest.approx(again.cats, abs=1e-6)


def test_spacys_ner_takes_the_encoder_as_its_own_tok2vec(encoder_dir, tmp_path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner", config={"model": {
        "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False,
        "hidden_width": 16, "maxout_pieces": 2, "use_upper": True, "nO": None, "tok2vec": hf_encoder(encoder_dir("electra"))}})
    egs = examples(nlp, "torch_ner")
    optimizer = nlp.initialize(lambda: egs)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer, drop=0.1)
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    texts = [eg.predicted.text for eg in egs]
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)] == [
        [(e.start, e.end, e.label_) for e in d.ents] for d in loaded.pipe(texts)]
