"""`spacy-pytorch-shim.TorchTok2Vec.v3`: each token's characters are a
feature (a character CNN, run once per distinct text), which trains, keeps
docs apart, survives a save and load, and composes with static vectors."""
import numpy
import pytest
import spacy
import torch
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.models.encoders import build_cnn_encoder_v2
from spacy_pytorch_shim.models.features import CHAR_ROWS, token_characters
from spacy_pytorch_shim.models.ner import build_ner_tagger_v2
from spacy_pytorch_shim.models.tok2vec import CharCNN, build_torch_tok2vec_v3

TEXTS = ["Alice lives in Paris", "", "Paris", "hyperbetalipoproteinemia and Alice"]


@pytest.fixture
def docs():
    nlp = spacy.blank("en")
    return [nlp.make_doc(text) for text in TEXTS]


def small_v3(**kwargs):
    kwargs = {"char_width": 8, **kwargs}
    return build_torch_tok2vec_v3(width=16, rows=[50, 10, 10, 10], encoder=build_cnn_encoder_v2(width=16), **kwargs)


def char_cnn(model):
    wrapper = next(node for node in model.walk() if node.shims)
    return wrapper.shims[0].module.chars


def test_characters_once_per_distinct_text(docs):
    (chars, inverse), _ = token_characters(10).begin_update(docs)
    texts = [token.text for doc in docs for token in doc]
    assert len(inverse) == len(texts) and len(chars.lengths) == len(set(texts))
    rows = numpy.split(chars.dataXd, numpy.cumsum(chars.lengths)[:-1])
    for text, row in zip(texts, inverse):
        if len(text) > 10:  # "hyperbetalipoproteinemia": its first and last 5 characters
            text = text[:5] + text[-5:]
        assert rows[row].tolist() == [ord(c) % CHAR_ROWS for c in text]


def test_the_char_cnn_of_a_text_is_its_own():
    """Texts laid end to end: each text's vector is the one it gets alone,
    and equals a padded convolution over its characters."""
    torch.manual_seed(0)
    cnn = CharCNN(4, 6)
    texts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    together = cnn(torch.tensor([c for t in texts for c in t]), torch.tensor([len(t) for t in texts]))
    for text, row in zip(texts, together):
        alone = cnn(torch.tensor(text), torch.tensor([len(text)]))[0]
        padded = torch.nn.functional.conv1d(cnn.embed(torch.tensor(text)).T.unsqueeze(0), cnn.conv.weight, cnn.conv.bias, padding=1)
        torch.testing.assert_close(row, alone)
        torch.testing.assert_close(row, padded[0].amax(dim=1))


def test_v3_gives_one_row_per_token_and_trains_the_char_cnn(docs):
    model = small_v3()
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert [y.shape for y in Y] == [(len(doc), 16) for doc in docs]
    before = char_cnn(model).conv.weight.detach().clone()
    # Not all ones: a LayerNorm's output sums to a constant, so ones give it no gradient.
    rng = numpy.random.default_rng(0)
    backprop([rng.normal(size=y.shape).astype("float32") for y in Y])
    model.finish_update(Adam(0.01))
    assert not numpy.allclose(before, char_cnn(model).conv.weight.detach())


def test_spelling_reaches_the_output(docs):
    """Two texts that differ in one middle character (which no hashed prefix
    or suffix sees) get different vectors."""
    nlp = spacy.blank("en")
    model = build_torch_tok2vec_v3(width=16, attrs=["PREFIX", "SUFFIX"], rows=[10, 10], encoder=build_cnn_encoder_v2(width=16, depth=0), char_width=8)
    a, b = nlp.make_doc("abcdxfgh"), nlp.make_doc("abcdyfgh")
    model.initialize(X=[a, b])
    ya, yb = model.predict([a, b])
    assert not numpy.allclose(ya, yb)


def test_docs_in_a_batch_do_not_see_each_other(docs):
    model = small_v3()
    model.initialize(X=docs)
    for doc, together in zip(docs, model.predict(docs)):
        numpy.testing.assert_allclose(model.predict([doc])[0], together, atol=1e-5)


def test_a_batch_of_empty_docs(docs):
    model = small_v3()
    model.initialize(X=docs)
    assert [y.shape for y in model.predict([docs[1], docs[1]])] == [(0, 16), (0, 16)]


def test_saved_and_loaded_ner_predicts_the_same(docs, tmp_path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("torch_ner", config={"model": {
        "@architectures": "spacy-pytorch-shim.TorchNERTagger.v2", "hidden_width": 16,
        "tok2vec": {"@architectures": "spacy-pytorch-shim.TorchTok2Vec.v3", "width": 16, "rows": [50, 10, 10, 10], "char_width": 8,
                    "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", "width": 16, "depth": 1}},
    }})
    examples = [Example.from_dict(nlp.make_doc("Alice lives in Paris"), {"entities": [(0, 5, "PER"), (15, 20, "LOC")]})]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(20):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    for text in TEXTS:
        numpy.testing.assert_allclose(loaded.get_pipe("torch_ner").predict([loaded.make_doc(text)])[0], ner.predict([nlp.make_doc(text)])[0], atol=1e-5)
    assert [e.text for e in loaded("Alice lives in Paris").ents] == [e.text for e in nlp("Alice lives in Paris").ents]


def test_with_static_vectors_the_gradient_reaches_the_projection(docs):
    nlp = spacy.blank("en")
    for word in ["Alice", "Paris", "lives"]:
        nlp.vocab.set_vector(word, numpy.ones((6,), dtype="float32") * len(word))
    docs = [nlp.make_doc(text) for text in TEXTS]
    model = build_ner_tagger_v2(tok2vec=small_v3(include_static_vectors=True), hidden_width=8, nO=5)
    model.initialize(X=docs)
    static = next(node for node in model.walk() if node.name == "static_vectors")
    projection = static.layers[0].get_param("W").copy()
    Y, backprop = model.begin_update(docs)
    rng = numpy.random.default_rng(0)
    backprop([rng.normal(size=y.shape).astype("float32") for y in Y])
    model.finish_update(Adam(0.01))
    assert not numpy.allclose(projection, static.layers[0].get_param("W"))


@pytest.mark.parametrize("key,value,message", [("char_width", 0, "`char_width` must be a positive integer"), ("max_chars", 1, "`max_chars` must be an integer >= 2")])
def test_bad_sizes_name_the_parameter(key, value, message):
    with pytest.raises(ValueError, match=rf"TorchTok2Vec.v3: {message}"):
        small_v3(**{key: value})
