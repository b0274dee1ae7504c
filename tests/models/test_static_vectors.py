"""`spacy-pytorch-shim.TorchTok2Vec.v2` with `include_static_vectors`: the
vectors of `nlp.vocab.vectors` (here from a small file the test writes and
`spacy init vectors` converts) are a feature of every token; they are used,
not trained, not saved with the model; a vocab without vectors is a clear
error at initialize; `spacy train` trains it with `--paths.vectors`."""
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "btc-sample"
WIDTH = 32
N_DIMS = 50

CONFIG = """
[paths]
vectors = null

[nlp]
lang = "en"
pipeline = ["torch_ner"]

[components]

[components.torch_ner]
factory = "torch_ner"

[components.torch_ner.model]
@architectures = "spacy-pytorch-shim.TorchNERTagger.v2"
hidden_width = 32

[components.torch_ner.model.tok2vec]
@architectures = "spacy-pytorch-shim.TorchTok2Vec.v2"
width = %d
rows = [500, 100, 100, 100]
include_static_vectors = %s

[components.torch_ner.model.tok2vec.encoder]
@architectures = "spacy-pytorch-shim.CNNEncoder.v2"
width = %d
depth = 1

[initialize]
vectors = ${paths.vectors}
"""


def make_config(static: bool = True, vectors=None) -> Config:
    config = Config().from_str(CONFIG % (WIDTH, "true" if static else "false", WIDTH), interpolate=False)
    config["paths"]["vectors"] = str(vectors) if vectors else None
    return config


@pytest.fixture(scope="module")
def examples():
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(SAMPLE / "train.spacy").get_docs(nlp.vocab))[:30]
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


@pytest.fixture(scope="module")
def vectors_dir(tmp_path_factory, examples):
    """A word2vec-style text file of the sample's words -> `spacy init vectors`."""
    tmp = tmp_path_factory.mktemp("vectors")
    words = sorted({token.text for eg in examples for token in eg.reference})
    rng = numpy.random.default_rng(0)
    lines = [f"{len(words)} {N_DIMS}"] + [
        word + " " + " ".join(f"{x:.4f}" for x in rng.normal(size=N_DIMS)) for word in words
    ]
    (tmp / "vectors.txt").write_text("\n".join(lines) + "\n", encoding="utf8")
    subprocess.run(
        [sys.executable, "-m", "spacy", "init", "vectors", "en", tmp / "vectors.txt", tmp / "pipeline"],
        check=True,
        capture_output=True,
    )
    return tmp / "pipeline"


def initialized(examples, config):
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    optimizer = nlp.initialize(lambda: [Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples])
    return nlp, optimizer


def tok2vec_output(nlp, text: str) -> numpy.ndarray:
    return nlp.get_pipe("torch_ner").model.get_ref("tok2vec").predict([nlp(text)])[0]


def test_vectors_are_used_not_trained_not_saved(examples, vectors_dir, tmp_path):
    nlp, optimizer = initialized(examples, make_config(vectors=vectors_dir))
    vectors = nlp.vocab.vectors
    assert vectors.shape[1] == N_DIMS and vectors.shape[0] > 100
    table = vectors.data.copy()
    text = examples[0].reference.text
    before = tok2vec_output(nlp, text)

    # Used: changing one word's vector changes that token's output.
    word = examples[0].reference[0].text
    vectors[word] = vectors[word] + 1.0
    assert not numpy.allclose(tok2vec_output(nlp, text)[0], before[0])
    vectors[word] = table[vectors.find(key=word)]
    numpy.testing.assert_allclose(tok2vec_output(nlp, text), before, atol=1e-6)

    # Trained: the projection, never the table.
    static = next(node for node in nlp.get_pipe("torch_ner").model.walk() if node.name == "static_vectors")
    projection = static.layers[0].get_param("W").copy()
    assert projection.shape == (WIDTH, N_DIMS)
    egs = [Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples]
    for _ in range(3):
        losses = nlp.update(egs, sgd=optimizer)
    assert losses["torch_ner"] > 0
    assert numpy.array_equal(nlp.vocab.vectors.data, table)
    assert not numpy.allclose(static.layers[0].get_param("W"), projection)

    # Saved once: with the vocab, not in the model (whose extra size is the
    # projection and the wider mixing layer).
    plain, _ = initialized(examples, make_config(static=False))
    with_static = len(nlp.get_pipe("torch_ner").model.to_bytes())
    without = len(plain.get_pipe("torch_ner").model.to_bytes())
    assert with_static - without < 0.2 * table.nbytes, (with_static, without, table.nbytes)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert numpy.array_equal(loaded.vocab.vectors.data, table)
    numpy.testing.assert_allclose(tok2vec_output(loaded, text), tok2vec_output(nlp, text), atol=1e-6)
    assert [e.text for e in loaded(text).ents] == [e.text for e in nlp(text).ents]


def test_missing_vectors_is_a_clear_error_at_initialize(examples):
    with pytest.raises(ValueError, match=r"TorchTok2Vec.v2 has include_static_vectors = true, but the pipeline's vocab has no vectors .*\[initialize\] vectors"):
        initialized(examples, make_config(vectors=None))


def test_without_static_vectors_v2_is_v1(examples):
    v2 = spacy.util.load_model_from_config(make_config(static=False), auto_fill=True)
    config = make_config(static=False)
    tok2vec = config["components"]["torch_ner"]["model"]["tok2vec"]
    tok2vec["@architectures"] = "spacy-pytorch-shim.TorchTok2Vec.v1"
    del tok2vec["include_static_vectors"]
    v1 = spacy.util.load_model_from_config(config, auto_fill=True)
    params = lambda nlp: [(name, tuple(p.shape)) for name, p in nlp.get_pipe("torch_ner").model.get_ref("tok2vec").layers[1].shims[0]._model.named_parameters()]
    assert params(v1) == params(v2)


@pytest.mark.slow
def test_spacy_train_with_paths_vectors(examples, vectors_dir, tmp_path):
    config = spacy.util.load_model_from_config(make_config(vectors=None), auto_fill=True).config
    (tmp_path / "config.cfg").write_text(config.to_str(), encoding="utf8")
    data = DocBin(docs=[eg.reference for eg in examples])
    data.to_disk(tmp_path / "train.spacy")
    args = [
        sys.executable, "-m", "spacy", "train", tmp_path / "config.cfg", "--output", tmp_path / "out",
        "--paths.train", tmp_path / "train.spacy", "--paths.dev", tmp_path / "train.spacy",
        "--training.max_steps", "6", "--training.eval_frequency", "3",
    ]
    missing = subprocess.run(args, capture_output=True, text=True)
    assert missing.returncode != 0
    assert "include_static_vectors = true, but the pipeline's vocab has no vectors" in missing.stdout + missing.stderr
    result = subprocess.run([*args, "--paths.vectors", vectors_dir], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    nlp = spacy.load(tmp_path / "out" / "model-last")
    assert nlp.vocab.vectors.shape[1] == N_DIMS
    assert nlp(examples[0].reference.text).has_annotation("ENT_IOB")
