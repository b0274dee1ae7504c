"""Inputs checked like spaCy checks them: gold values, labels, empty
initialization and batches, sizes in configs, exclusive data in a
multi-label component, and many labels added one by one."""
import warnings

import numpy
import pytest
import spacy
from spacy.training import Example
from thinc.api import Adam

from spacy_pytorch_shim.pipeline import (
    TorchMultiLabelTextCategorizer,
    TorchTextCategorizer,
    TorchTextCategorizerBase,
)

TOK2VEC = {"width": 16, "rows": [200, 50, 50, 50], "encoder": {"width": 16, "depth": 1}}
# The text classifiers' default models have no tok2vec: these tests add one.
TEXTCAT_TOK2VEC = {"@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1", **TOK2VEC, "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", **TOK2VEC["encoder"]}}
# The factories' default model is TorchNERTagger.v2; the same with the .v1 blocks.
NER_V1 = {
    "@architectures": "spacy-pytorch-shim.TorchNERTagger.v1",
    "tok2vec": {
        **TOK2VEC,
        "@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1",
        "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v1", "width": 16, "depth": 1},
    },
}
CONFIGS = {
    "torch_textcat": {"model": {"tok2vec": TEXTCAT_TOK2VEC, "hidden_width": 16, "ngram_rows": 256}},
    "torch_textcat_multilabel": {"model": {"tok2vec": TEXTCAT_TOK2VEC, "hidden_width": 16, "ngram_rows": 256}},
    "torch_ner": {"model": {"tok2vec": TOK2VEC, "hidden_width": 16}},
}


def make_pipe(factory, **overrides):
    nlp = spacy.blank("en")
    config = {"model": {**CONFIGS[factory]["model"], **overrides}}
    return nlp, nlp.add_pipe(factory, name="pipe", config=config)


@pytest.fixture(params=sorted(CONFIGS))
def factory(request):
    return request.param


@pytest.mark.parametrize("factory", ["torch_textcat", "torch_textcat_multilabel"])
@pytest.mark.parametrize("one", [numpy.float32(1.0), numpy.int64(1), numpy.float64(1.0), numpy.bool_(True), 1, True])
def test_gold_cats_of_any_number_type(factory, one):
    nlp, pipe = make_pipe(factory)
    zero = type(one)(0)
    egs = [Example.from_dict(nlp.make_doc("good film"), {"cats": {"POS": one, "NEG": zero}})]
    nlp.initialize(lambda: egs)
    losses = nlp.update(egs, sgd=Adam(0.01))
    assert numpy.isfinite(losses["pipe"])


@pytest.mark.parametrize("factory", ["torch_textcat", "torch_textcat_multilabel"])
@pytest.mark.parametrize("bad", ["1", None, float("nan"), numpy.float32(2.0), -1])
def test_gold_cats_that_are_not_numbers_in_the_unit_interval(factory, bad):
    nlp, pipe = make_pipe(factory)
    egs = [Example.from_dict(nlp.make_doc("good film"), {"cats": {"POS": 1.0, "NEG": 0.0}})]
    nlp.initialize(lambda: egs)
    bad_egs = [Example.from_dict(nlp.make_doc("oops"), {"cats": {"POS": bad, "NEG": 0.0}})]
    with pytest.raises(ValueError, match=r"'POS' is outside \[0, 1\]"):
        nlp.update(bad_egs)


@pytest.mark.parametrize("label, code", [(1, "E187"), (None, "E187"), (("A",), "E187"), (["A"], "E187"), ("", "non-empty")])
def test_labels_must_be_non_empty_strings(factory, label, code):
    nlp, pipe = make_pipe(factory)
    with pytest.raises(ValueError, match=code):
        pipe.initialize(lambda: (x for x in []), labels=["A", label])
    assert pipe.labels == () and "initialized" not in pipe.cfg
    with pytest.raises(ValueError, match=code):
        pipe.add_label(label)
    assert pipe.labels == ()


def test_initialize_with_labels_and_no_examples_then_empty_batches(factory):
    nlp, pipe = make_pipe(factory)
    pipe.initialize(lambda: (x for x in []), labels=["A", "B"])
    assert pipe.labels == ("A", "B") and pipe.is_initialized
    assert len(pipe.predict([])) == 0
    assert len(pipe.model.predict([])) == 0
    assert list(nlp.pipe([])) == []
    doc = nlp("some text")
    if factory != "torch_ner":
        assert doc.cats.keys() == {"A", "B"}


@pytest.mark.parametrize("factory", ["torch_textcat", "torch_textcat_multilabel"])
def test_textcat_without_labels_explains_itself_in_one_line(factory):
    """What `spacy assemble` runs (nlp.initialize() with spaCy's dummy example)."""
    nlp, pipe = make_pipe(factory)
    with pytest.raises(ValueError, match=r"E143.*pass labels=") as info:
        nlp.initialize()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "factory, overrides, key",
    [
        ("torch_ner", {"tok2vec": {**TOK2VEC, "width": 0}}, "width"),
        ("torch_ner", {"tok2vec": {**TOK2VEC, "width": -4, "encoder": {"width": -4}}}, "width"),
        ("torch_ner", {"tok2vec": {**TOK2VEC, "rows": [200, 0, 50, 50]}}, r"rows\[1\]"),
        ("torch_ner", {"tok2vec": {**TOK2VEC, "encoder": {"width": 16, "depth": -1}}}, "depth"),
        ("torch_ner", {"hidden_width": -1}, "hidden_width"),
        ("torch_ner", {**NER_V1, "dropout": 1.5}, "dropout"),
        ("torch_textcat", {"hidden_width": 0}, "hidden_width"),
        ("torch_textcat", {"ngram_rows": 1}, "ngram_rows"),
        ("torch_textcat", {"ngram_size": -2}, "ngram_size"),
    ],
)
def test_sizes_are_checked_at_construction_naming_the_config_key(factory, overrides, key):
    with pytest.raises(ValueError, match=rf"spacy-pytorch-shim\.\w+\.v[1-4]: `{key}` must be"):
        make_pipe(factory, **overrides)


def test_ner_hidden_width_zero_means_no_hidden_layer():
    nlp, pipe = make_pipe("torch_ner", hidden_width=0)
    pipe.initialize(lambda: (x for x in []), labels=["PER"])
    head = pipe.model.get_ref("output_layer").shims[0].module
    assert head.output.in_features == TOK2VEC["width"]
    assert all(len(ents) == 0 or ents[0].label_ == "PER" for ents in [nlp("Alice").ents])


def test_multilabel_warns_when_every_example_has_exactly_one_positive():
    nlp, pipe = make_pipe("torch_textcat_multilabel")
    exclusive = [
        Example.from_dict(nlp.make_doc(t), {"cats": cats})
        for t, cats in [("a", {"X": 1.0, "Y": 0.0}), ("b", {"X": 0.0, "Y": 1.0}), ("c", {"X": 1.0, "Y": 0.0})]
    ]
    with pytest.warns(UserWarning, match="exactly one positive label.*torch_textcat"):
        nlp.initialize(lambda: exclusive)
    mixed = exclusive + [Example.from_dict(nlp.make_doc("d"), {"cats": {"X": 1.0, "Y": 1.0}})]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_pipe("torch_textcat_multilabel")[1].initialize(lambda: mixed)


def test_textcat_components_are_two_classes_over_one_base():
    _, exclusive = make_pipe("torch_textcat")
    _, multilabel = make_pipe("torch_textcat_multilabel")
    assert type(exclusive) is TorchTextCategorizer and type(multilabel) is TorchMultiLabelTextCategorizer
    assert isinstance(multilabel, TorchTextCategorizerBase) and not isinstance(multilabel, TorchTextCategorizer)
    assert exclusive.exclusive and not multilabel.exclusive


@pytest.mark.parametrize("factory", ["torch_textcat_multilabel", "torch_ner"])
def test_many_labels_added_one_by_one_cost_one_resize(factory):
    """Linear, not quadratic: the output layers are resized once, when the
    model is next used, however many labels were added (timing: bench/add_labels.py)."""
    nlp, pipe = make_pipe(factory)
    pipe.initialize(lambda: (x for x in []), labels=["A"])
    doc = nlp("Alice likes Paris")
    before = doc.cats if factory != "torch_ner" else [(e.text, e.label_) for e in doc.ents]
    resize = pipe.model.attrs["resize_output"]
    calls = []
    pipe.model.attrs["resize_output"] = lambda model, n: calls.append(n) or resize(model, n)
    for i in range(200):
        assert pipe.add_label(f"L{i}") == 1
    assert calls == []
    doc = nlp("Alice likes Paris")
    assert calls == [pipe.n_outputs(201)]
    if factory == "torch_ner":
        assert [(e.text, e.label_) for e in doc.ents] == before
    else:
        # Equal up to float rounding: a wider output layer may take another
        # matrix-multiply kernel (it did after other tests ran in the process).
        assert doc.cats["A"] == pytest.approx(before["A"], rel=1e-6) and doc.cats["L7"] == 0.0
    nlp("again")
    assert len(calls) == 1


def test_labels_added_then_saved_are_resized_before_saving(factory, tmp_path):
    nlp, pipe = make_pipe(factory)
    pipe.initialize(lambda: (x for x in []), labels=["A", "B"])
    pipe.add_label("C")
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("pipe").labels == ("A", "B", "C")
    assert loaded("x y").to_json() == nlp("x y").to_json()


def test_a_spacy_tok2vec_of_width_zero_is_named_not_called_unknown():
    tok2vec = {
        "@architectures": "spacy.Tok2Vec.v2",
        "embed": {"@architectures": "spacy.MultiHashEmbed.v2", "width": 0, "attrs": ["NORM"], "rows": [100], "include_static_vectors": False},
        "encode": {"@architectures": "spacy.MaxoutWindowEncoder.v2", "width": 0, "depth": 1, "window_size": 1, "maxout_pieces": 2},
    }
    with pytest.raises(ValueError, match=r"TorchNERTagger.v2: `tok2vec.width` must be a positive integer, got 0"):
        make_pipe("torch_ner", tok2vec=tok2vec)


def test_size_errors_name_the_version_the_config_uses():
    with pytest.raises(ValueError, match=r"spacy-pytorch-shim\.TorchNERTagger\.v2: `hidden_width`"):
        make_pipe("torch_ner", hidden_width=-1)
    with pytest.raises(ValueError, match=r"spacy-pytorch-shim\.TorchNERTagger\.v1: `hidden_width`"):
        make_pipe("torch_ner", **{**NER_V1, "hidden_width": -1})
    with pytest.raises(ValueError, match=r"spacy-pytorch-shim\.CNNEncoder\.v2: `depth`"):
        make_pipe("torch_ner", tok2vec={**TOK2VEC, "encoder": {"width": 16, "depth": -1}})
