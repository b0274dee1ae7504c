"""HFEncoder.v1 on tiny random encoders of seven architectures: one vector
per spaCy token, the mean (or first/last) of exactly its pieces' vectors,
long documents in windows, batches bounded by pieces, inference mode,
mixed precision, and one-line errors for bad settings."""
import os
from typing import List

import numpy
import pytest
import spacy
import torch
from thinc.api import set_dropout_rate

from spacy_pytorch_shim.models.transformer import encoder as encoder_module
from spacy_pytorch_shim.models.transformer import module as module_module
from spacy_pytorch_shim.models.transformer.alignment import align_pieces
from spacy_pytorch_shim.models.transformer.encoder import build_hf_encoder, build_hf_encoder_v2, piece_limit, special_ids
from spacy_pytorch_shim.models.transformer.windows import best_windows, plan_windows

from tiny_encoders import KINDS, WIDTH, sample_texts

TRICKY = ["Hello  world, it's Müller's e-mail: x@y.com!\n\nOK", "  leading and trailing spaces  ", "", "\u200b zero\u200bwidth"]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


@pytest.fixture(scope="module")
def docs(nlp):
    return [nlp(text) for text in sample_texts(40)[::2] + TRICKY]


def encoder(path, **settings):
    model = build_hf_encoder(name=str(path), width=WIDTH, **settings)
    model.initialize()
    return model


def pieces_of(model, doc):
    encoded = model.shims[0].tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"], encoded["offset_mapping"]


def run_window(model, ids: List[int]) -> torch.Tensor:
    """The encoder's piece vectors for one window, run on its own."""
    before, after = special_ids(model.shims[0].tokenizer)
    with torch.no_grad():
        out = model.shims[0].module.transformer(input_ids=torch.tensor([before + ids + after])).last_hidden_state[0]
    return out[len(before) : len(before) + len(ids)]


def expected_vectors(model, doc, window: int, stride: int, pooling: str = "mean") -> numpy.ndarray:
    """Each token's pooled pieces, from the window chosen for it, computed one
    window at a time."""
    ids, offsets = pieces_of(model, doc)
    tokens, pieces = align_pieces(doc, offsets)
    spans = plan_windows(len(ids), window, stride)
    outputs = [run_window(model, ids[s:e]) for s, e in spans]
    result = numpy.zeros((len(doc), WIDTH), dtype="f")
    for i in set(tokens.tolist()):
        mine = pieces[tokens == i]
        if pooling != "mean":
            mine = mine[:1] if pooling == "first" else mine[-1:]
        w = best_windows(numpy.array([mine.min()]), numpy.array([mine.max()]), spans, len(ids))[0]
        start = spans[w][0]
        result[i] = outputs[w][torch.tensor(mine - start)].mean(0).numpy()
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_each_token_gets_the_mean_of_its_pieces(kind, encoder_dir, docs):
    model = encoder(encoder_dir(kind))
    limit = piece_limit(model.shims[0].module.transformer, model.shims[0].tokenizer)
    outputs = model.predict(docs)
    assert [y.shape for y in outputs] == [(len(doc), WIDTH) for doc in docs]
    for doc, Y in zip(docs, outputs):
        ids, offsets = pieces_of(model, doc)
        tokens, pieces = align_pieces(doc, offsets)
        # Every token with a character that is not a space has a piece, and
        # its pieces cover all its characters.
        for token in doc:
            if token.is_space or not token.text.strip("\u200b"):
                continue
            covered = set()
            for p in pieces[tokens == token.i]:
                covered.update(range(*offsets[p]))
            assert set(range(token.idx, token.idx + len(token.text.strip("\u200b")))) <= covered | {
                token.idx + k for k, c in enumerate(token.text) if c == "\u200b"}, (kind, token.text)
        assert numpy.isfinite(Y).all()
        if len(ids) <= limit:
            numpy.testing.assert_allclose(Y, expected_vectors(model, doc, limit, limit - 1), atol=2e-5)
        # A token with no piece gets zeros, not a crash.
        without = sorted(set(range(len(doc))) - set(tokens.tolist()))
        assert not Y[without].any()


@pytest.mark.parametrize("kind", ["roberta", "deberta-v2", "modernbert"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_long_docs_run_in_windows_and_each_token_takes_its_best_window(kind, pooling, encoder_dir, nlp):
    model = encoder(encoder_dir(kind), window=16, stride=10, max_pieces=40, pooling=pooling)
    text = " ".join(sample_texts(40)[:6])
    doc = nlp(text)
    n_pieces = len(pieces_of(model, doc)[0])
    assert n_pieces > 3 * 16
    sizes = []
    hook = model.shims[0].module.transformer.register_forward_hook(
        lambda module, args, kwargs, out: sizes.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    (Y,) = model.predict([doc])
    hook.remove()
    numpy.testing.assert_allclose(Y, expected_vectors(model, doc, 16, 10, pooling), atol=2e-5)
    # Windows run in several passes, none over max_pieces padded pieces.
    assert len(sizes) > 1 and max(sizes) <= 40


@pytest.mark.parametrize("kind", ["bert", "deberta-v2", "modernbert"])
def test_batching_by_pieces_does_not_change_the_vectors(kind, encoder_dir, docs):
    small = encoder(encoder_dir(kind), max_pieces=64)
    big = build_hf_encoder(name=str(encoder_dir(kind)), width=WIDTH, max_pieces=100_000)
    big.initialize()
    for a, b in zip(small.predict(docs), big.predict(docs)):
        numpy.testing.assert_allclose(a, b, atol=2e-5)


def test_first_pooling_takes_the_first_piece(encoder_dir, nlp):
    model = encoder(encoder_dir("bert"), pooling="first")
    doc = nlp("unbelievable tokenisation")
    (Y,) = model.predict([doc])
    limit = piece_limit(model.shims[0].module.transformer, model.shims[0].tokenizer)
    numpy.testing.assert_allclose(Y, expected_vectors(model, doc, limit, limit - 1, "first"), atol=2e-5)
    assert not numpy.allclose(Y, encoder(encoder_dir("bert")).predict([doc])[0])


def test_prediction_runs_in_inference_mode_and_training_has_gradients(encoder_dir, docs):
    model = encoder(encoder_dir("bert"))
    modes = []
    model.shims[0].module.transformer.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    model.predict(docs[:3])
    predicted = len(modes)
    set_dropout_rate(model, 0.0)
    Y, backprop = model.begin_update(docs[:3])
    assert predicted and modes == [True] * predicted + [False] * (len(modes) - predicted) and len(modes) > predicted
    backprop([numpy.ones_like(y) for y in Y])
    # Every parameter has a gradient (BERT's sentence pooler is dropped).
    grads = [p.grad for p in model.shims[0].module.parameters()]
    assert all(g is not None for g in grads) and any(bool(g.abs().sum()) for g in grads)


@pytest.mark.parametrize("precision,native,computes", [
    ("float32", True, torch.float32), ("bfloat16", False, torch.bfloat16), ("auto", True, torch.bfloat16),
    ("auto", False, torch.float32), ("float16", True, torch.float32),
])
def test_mixed_precision_on_the_cpu(precision, native, computes, encoder_dir, docs, monkeypatch):
    """bfloat16 runs on the CPU too, "auto" where the hardware has it,
    float16 on a GPU only; the token vectors and gradients stay float32."""
    monkeypatch.setattr(module_module, "native_bfloat16", lambda device: native)
    model = encoder(encoder_dir("bert"), mixed_precision=precision)
    seen = []
    layer = model.shims[0].module.transformer.encoder.layer[0].intermediate.dense
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    reference = encoder(encoder_dir("bert")).predict(docs)
    Y = model.predict(docs)
    assert seen and set(seen) == {computes}
    for y, ref in zip(Y, reference):
        assert y.dtype == numpy.float32
        numpy.testing.assert_allclose(y, ref, atol=0.1 if computes == torch.bfloat16 else 1e-6)
    Y, backprop = model.begin_update(docs[:3])
    backprop([numpy.ones_like(y) for y in Y])
    assert {p.grad.dtype for p in model.shims[0].module.parameters()} == {torch.float32}


def test_a_bfloat16_encoder_on_the_cpu_bounds_onednns_kernel_cache(encoder_dir, monkeypatch):
    """oneDNN keeps a kernel per input shape: an encoder that computes in
    bfloat16 on the CPU keeps few, unless the environment already says."""
    variable = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    monkeypatch.setattr(module_module, "native_bfloat16", lambda device: True)
    monkeypatch.delenv(variable, raising=False)
    encoder(encoder_dir("bert"))
    assert variable not in os.environ
    encoder(encoder_dir("bert"), mixed_precision="auto")
    assert os.environ[variable] == module_module.ONEDNN_KERNELS_KEPT
    monkeypatch.setenv(variable, "100")
    encoder(encoder_dir("bert"), mixed_precision="bfloat16")
    assert os.environ[variable] == "100"


def attention_kernels_run(run) -> dict:
    """Which of torch's attention kernels on the CPU `run()` calls."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    names = {event.name for event in profile.events()}
    return {
        "fused": "aten::_scaled_dot_product_flash_attention_for_cpu" in names,
        "unfused": "aten::_scaled_dot_product_attention_math" in names,
    }


def test_training_on_short_windows_takes_the_unfused_attention_and_prediction_the_fused(encoder_dir, docs, monkeypatch):
    pytest.importorskip("torch.nn.attention", reason="torch < 2.3 chooses the attention kernel itself")
    model = build_hf_encoder_v2(name=str(encoder_dir("bert")), width=WIDTH, attention_dropout=0.0)
    model.initialize()
    set_dropout_rate(model, 0.1)
    assert attention_kernels_run(lambda: model.begin_update(docs)) == {"fused": False, "unfused": True}
    assert attention_kernels_run(lambda: model.predict(docs)) == {"fused": True, "unfused": False}
    monkeypatch.setattr(module_module, "UNFUSED_TRAINING_MAX_PIECES", 4)  # every window is longer
    assert attention_kernels_run(lambda: model.begin_update(docs)) == {"fused": True, "unfused": False}


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(encoder_dir, docs):
    grads, forwards = [], []
    for checkpointing in (False, True):
        model = encoder(encoder_dir("bert"), gradient_checkpointing=checkpointing)
        calls = []
        model.shims[0].module.transformer.encoder.layer[0].attention.register_forward_hook(lambda *_: calls.append(1))
        set_dropout_rate(model, 0.0)
        Y, backprop = model.begin_update(docs[:4])
        backprop([numpy.ones_like(y) for y in Y])
        forwards.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in model.shims[0].module.named_parameters() if p.grad is not None})
    # With checkpointing the layer runs again in the backward pass.
    assert forwards[0] >= 1 and forwards[1] == 2 * forwards[0]
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "settings,expected",
    [
        ({"name": ""}, "`name` must be"),
        ({"pooling": "max"}, "`pooling` must be one of mean, first, last, got 'max'"),
        ({"window": 8, "stride": 8}, "`stride` (8) must be less than `window` (8)"),
        ({"window": 1}, "`window` must be an integer >= 2, got 1"),
        ({"max_pieces": 0}, "`max_pieces` must be a positive integer, got 0"),
        ({"mixed_precision": "fp8"}, "`mixed_precision` must be one of float32, float16, bfloat16, auto, got 'fp8'"),
        ({"layer_decay": 0}, "`layer_decay` must be a number in (0, 1], got 0"),
        ({"width": 0}, "`width` must be a positive integer, got 0"),
    ],
)
def test_bad_settings_are_one_line_errors_at_build(settings, expected):
    with pytest.raises(ValueError) as err:
        build_hf_encoder(**{"name": "some/encoder", "width": 8, **settings})
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert "spacy-pytorch-shim.HFEncoder.v1" in str(err.value)


@pytest.mark.parametrize("value", [1.0, -0.1, "0", True])
def test_a_bad_attention_dropout_is_a_one_line_error_naming_v2(value):
    with pytest.raises(ValueError) as err:
        build_hf_encoder_v2(name="some/encoder", width=8, attention_dropout=value)
    assert str(err.value) == f"spacy-pytorch-shim.HFEncoder.v2: `attention_dropout` must be null or a number in [0, 1), got {value!r}"


def test_settings_that_need_the_encoder_are_one_line_errors_at_initialize(encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [
        (dict(name=str(tmp_path / "missing"), width=WIDTH), f"`name` '{tmp_path / 'missing'}' could not be loaded"),
        (dict(name=str(encoder_dir("bert")), width=7), f"`width` is 7 but '{encoder_dir('bert')}' has hidden size {WIDTH}"),
        (dict(name=str(encoder_dir("bert")), width=WIDTH, window=500), "`window` (500) is more than"),
        (dict(name=str(encoder_dir("bert")), width=WIDTH, stride=500), "`stride` (500) must be less than the window"),
    ]
    for settings, expected in cases:
        model = build_hf_encoder(**settings)
        with pytest.raises(ValueError) as err:
            model.initialize()
        assert expected in str(err.value) and "\n" not in str(err.value)
        assert not model.shims[0].built


def test_a_tokenizer_without_offsets_is_refused(encoder_dir, monkeypatch):
    transformer, tokenizer = encoder_module.load_pretrained(encoder_module.ARCH, str(encoder_dir("bert")))
    monkeypatch.setattr(type(tokenizer), "is_fast", property(lambda self: False))
    monkeypatch.setattr(encoder_module, "load_pretrained", lambda arch, name: (transformer, tokenizer))
    model = build_hf_encoder(name="slow", width=WIDTH)
    with pytest.raises(ValueError, match="`name` 'slow' has no fast tokenizer"):
        model.initialize()


def test_predicting_before_initialize_is_a_clear_error(nlp):
    model = build_hf_encoder(name="some/encoder", width=8)
    with pytest.raises(ValueError, match="not loaded: initialize the pipeline first"):
        model.predict([nlp("text")])


def test_without_transformers_initialize_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    model = build_hf_encoder(name="some/encoder", width=8)
    with pytest.raises(ImportError, match=r"needs transformers: pip install 'spacy-pytorch-shim\[transformers\]'"):
        model.initialize()
