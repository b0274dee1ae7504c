"""int8 serving: one command stores a trained pipeline's encoder as int8,
which saves, reloads as int8 and predicts close to float32."""
import subprocess
import sys

import numpy
import pytest
import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.models.transformer.int8 import INT_MM_ON_CPU, Int8Linear

from tiny_encoders import DATA, WIDTH


def vectors(nlp, docs):
    return nlp.get_pipe("torch_ner").model.get_ref("tok2vec").predict(docs)


def test_one_command_saves_the_encoder_as_int8_and_it_reloads_as_int8(encoder_dir, tmp_path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    tok2vec = {"@architectures": "spacy-pytorch-shim.HFEncoder.v1", "name": str(encoder_dir("roberta")), "width": WIDTH}
    nlp.add_pipe("torch_ner", config={"model": {"@architectures": "spacy-pytorch-shim.TorchNERTagger.v2", "tok2vec": tok2vec}})
    docs = list(DocBin().from_disk(DATA / "btc-sample" / "train.spacy").get_docs(nlp.vocab))[:12]
    egs = [Example(nlp.make_doc(d.text), d) for d in docs]
    nlp.initialize(lambda: egs)
    nlp.update(egs, sgd=Adam(0.001))
    nlp.to_disk(tmp_path / "float32")
    done = quantize_encoder(tmp_path / "float32", tmp_path / "int8")
    assert done.returncode == 0, done.stdout + done.stderr
    loaded = spacy.load(tmp_path / "int8")
    transformer = loaded.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0].module.transformer
    linears = [m for m in transformer.modules() if isinstance(m, Int8Linear)]
    assert linears and all(m.weight.dtype.is_floating_point is False for m in linears)
    assert not any(type(m).__name__ == "Linear" for m in transformer.modules())
    texts = [eg.predicted for eg in egs[:6]]
    for q, f in zip(vectors(loaded, texts), vectors(nlp, texts)):
        cos = (q * f).sum(1) / (numpy.linalg.norm(q, axis=1) * numpy.linalg.norm(f, axis=1) + 1e-12)
        assert cos[numpy.linalg.norm(f, axis=1) > 0].min() > 0.99
        assert not numpy.array_equal(q, f)
    size = lambda name: (tmp_path / name / "torch_ner" / "model").stat().st_size
    assert size("int8") < 0.75 * size("float32")
    # Loaded again from the int8 files: the same int8 predictions.
    again = spacy.load(tmp_path / "int8")
    for a, b in zip(vectors(again, texts), vectors(loaded, texts)):
        numpy.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not INT_MM_ON_CPU, reason="this torch has no CPU int8 matrix product")
def test_int8_inference_multiplies_int8_activations_by_int8_weights():
    """The speed comes from an int8 x int8 product: activations are quantized
    per row at each call, so the result is exactly the integer product of the
    two quantized matrices, rescaled (not a float product of dequantized
    weights)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 10)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(2, 3, 24)
    with torch.inference_mode():
        out = layer(x)
    rows = x.reshape(-1, 24)
    x_scale = rows.abs().amax(dim=1, keepdim=True) / 127
    x_int = torch.round(rows / x_scale).to(torch.int64)
    exact = (x_int @ layer.weight.to(torch.int64).t()).double() * x_scale.double() * layer.scale.double() + linear.bias.double()
    torch.testing.assert_close(out.reshape(-1, 10).double(), exact, rtol=1e-5, atol=1e-5)
    # Close to the float layer, and what a gradient-wanting call (training, no
    # int8 product) computes from the dequantized weights.
    torch.testing.assert_close(out, linear(x).detach(), rtol=0.05, atol=0.05)
    torch.testing.assert_close(out, layer(x).detach(), rtol=0.05, atol=0.05)
    assert not torch.equal(out, layer(x).detach())


def test_a_pipeline_without_an_encoder_is_a_clear_error(tmp_path):
    nlp = spacy.blank("en")
    nlp.to_disk(tmp_path / "p")
    done = quantize_encoder(tmp_path / "p", tmp_path / "q")
    assert done.returncode == 1
    assert "has no Hugging Face encoder" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "q").exists()


def test_an_output_that_holds_files_is_refused(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "keep.txt").write_text("mine")
    done = quantize_encoder(tmp_path / "p", tmp_path / "q")
    assert done.returncode == 1 and "not an empty directory" in done.stdout
    assert (tmp_path / "q" / "keep.txt").read_text() == "mine"


def quantize_encoder(pipeline, output):
    """`python -m spacy quantize-encoder PIPELINE OUTPUT`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "spacy", "quantize-encoder", str(pipeline), str(output)],
        capture_output=True, text=True,
    )
