"""What the shim promises for every torch model, for a Hugging Face encoder
in a torch component: averages really used, the caller's dropout rate in the
encoder (or a fixed rate on the attention probabilities), the fused update, ParamGroups' freezing and learn rates (and layer
decay), saving config + tokenizer + weights and loading them all or nothing
with no network, and rehearsal."""
import json
import re
import shutil
from pathlib import Path

import numpy
import pytest
import spacy
import srsly
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam, Config, fix_random_seed, set_dropout_rate

from spacy_pytorch_shim.models import optimizer as shim_optimizer
from spacy_pytorch_shim.models import torch_shim
from spacy_pytorch_shim.models.serialization import ModelLoadError
from spacy_pytorch_shim.models.transformer import shim as hf_shim
from spacy_pytorch_shim.models.transformer.encoder import build_hf_encoder_v2

from tiny_encoders import DATA, WIDTH

ENCODER = "hf_encoder.transformer"


def make_nlp(path, *, param_groups=None, **settings):
    fix_random_seed(0)
    tok2vec = {"@architectures": "spacy-pytorch-shim.HFEncoder.v1", "name": str(path), "width": WIDTH, **settings}
    model = {"@architectures": "spacy-pytorch-shim.TorchNERTagger.v2", "hidden_width": 0, "tok2vec": tok2vec}
    if param_groups is not None:
        model = {"@architectures": "spacy-pytorch-shim.ParamGroups.v1", "model": model, **param_groups}
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_ner", config={"model": model})
    return nlp


def examples(nlp, n=16):
    docs = list(DocBin().from_disk(DATA / "btc-sample" / "train.spacy").get_docs(nlp.vocab))[:n]
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


def encoder_params(nlp):
    return dict(nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0].module.named_parameters())


def snapshot(nlp):
    return {name: p.detach().clone() for name, p in encoder_params(nlp).items()}


def trained(path, steps=3, **kwargs):
    nlp = make_nlp(path, **kwargs)
    egs = examples(nlp)
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.001)  # with parameter averages
    for _ in range(steps):
        nlp.update(egs, sgd=optimizer, drop=0.1)
    return nlp, optimizer, egs


def scores(nlp, docs):
    return nlp.get_pipe("torch_ner").model.predict(docs)


def test_averages_are_swapped_in_for_evaluation_and_restored(encoder_dir):
    nlp, optimizer, egs = trained(encoder_dir("bert"))
    shim = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0]
    before = snapshot(nlp)
    docs = [eg.predicted for eg in egs[:4]]
    raw = scores(nlp, docs)
    trained_names = list(encoder_params(nlp))
    assert all((shim.id, name) in optimizer.averages for name in trained_names)
    with nlp.use_params(optimizer.averages):
        for name in trained_names:
            numpy.testing.assert_array_equal(encoder_params(nlp)[name].detach().numpy().ravel(), optimizer.averages[(shim.id, name)].ravel())
        averaged = scores(nlp, docs)
    assert not numpy.allclose(raw[0], averaged[0])
    for name, value in snapshot(nlp).items():
        assert torch.equal(value, before[name])


def test_the_callers_dropout_rate_reaches_attention_dropout_kept_as_a_float(encoder_dir):
    """ModernBERT passes its attention dropout to scaled_dot_product_attention
    from a float attribute, not a Dropout module, and builds its attention
    output dropout as an Identity when its config's rate is 0."""
    nlp, optimizer, egs = trained(encoder_dir("modernbert"), steps=1)
    transformer = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0].module.transformer
    attention = [m for m in transformer.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    assert attention
    nlp.update(egs[:2], sgd=optimizer, drop=0.37)
    assert {m.attention_dropout for m in attention} == {0.37}
    # Its attention output dropout, an Identity when the config's rate is 0
    # (as here), is a Dropout that takes the caller's rate.
    out_drops = [m.out_drop for m in attention]
    assert all(isinstance(d, torch.nn.Dropout) for d in out_drops) and {d.p for d in out_drops} == {0.37}


def test_the_callers_dropout_rate_reaches_the_encoders_dropout(encoder_dir):
    nlp, optimizer, egs = trained(encoder_dir("roberta"), steps=1)
    transformer = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0].module.transformer
    dropouts = [m for m in transformer.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts
    nlp.update(egs[:2], sgd=optimizer, drop=0.37)
    assert {m.p for m in dropouts} == {0.37}
    # In training, rate 0 is deterministic and 0.5 is not.
    model = nlp.get_pipe("torch_ner").model
    docs = [eg.predicted for eg in egs[:3]]
    for rate, same in ((0.0, True), (0.5, False)):
        model.get_ref("tok2vec").attrs["dropout_rate"] = rate
        first, _ = model.get_ref("tok2vec").begin_update(docs)
        second, _ = model.get_ref("tok2vec").begin_update(docs)
        assert numpy.allclose(first[0], second[0]) is same


# The dropouts on the attention probabilities, found by their place in each
# family's module tree; ModernBERT keeps its rate as a float attribute.
ATTENTION_DROPOUT = {
    "bert": r"\.attention\.self\.dropout$",
    "distilbert": r"\.attention\.dropout$",
    "deberta-v2": r"\.attention\.self\.(pos_)?dropout$",
    "modernbert": None,
}


@pytest.mark.parametrize("kind", list(ATTENTION_DROPOUT))
def test_a_fixed_attention_dropout_keeps_its_rate_and_the_other_dropouts_take_the_callers(encoder_dir, kind):
    model = build_hf_encoder_v2(name=str(encoder_dir(kind)), width=WIDTH, attention_dropout=0.0)
    model.initialize()
    set_dropout_rate(model, 0.37)
    model.begin_update([spacy.blank("en")("A short text to encode.")])
    transformer = model.shims[0].module.transformer
    dropouts = {name: m.p for name, m in transformer.named_modules() if isinstance(m, torch.nn.Dropout)}
    if ATTENTION_DROPOUT[kind] is None:
        floats = [m.attention_dropout for m in transformer.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
        assert floats and set(floats) == {0.0}
        assert dropouts and set(dropouts.values()) == {0.37}
    else:
        attention = {name for name in dropouts if re.search(ATTENTION_DROPOUT[kind], name)}
        assert attention and {dropouts[name] for name in attention} == {0.0}
        assert len(dropouts) > len(attention) and {p for name, p in dropouts.items() if name not in attention} == {0.37}


def test_an_attention_dropout_with_nothing_to_act_on_warns(encoder_dir, monkeypatch):
    monkeypatch.setattr(hf_shim, "SELF_ATTENTION_SUFFIX", "NoSuchAttention")
    model = build_hf_encoder_v2(name=str(encoder_dir("bert")), width=WIDTH, attention_dropout=0.0)
    with pytest.warns(UserWarning, match="attention_dropout = 0.0 has no effect on this BertModel"):
        model.initialize()


def test_the_fused_update_equals_the_per_parameter_update(encoder_dir, monkeypatch):
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(torch_shim, "supports_fused", lambda optimizer: False)
        fused_calls = []
        monkeypatch.setattr(torch_shim, "fused_step", lambda *a, **k: (fused_calls.append(1), shim_optimizer.fused_step(*a, **k)))
        nlp = make_nlp(encoder_dir("electra"))
        egs = examples(nlp, 8)
        nlp.initialize(lambda: egs)
        optimizer = Adam(0.001)
        for _ in range(2):
            nlp.update(egs, sgd=optimizer, drop=0.0)
        assert bool(fused_calls) is fused
        results.append(snapshot(nlp))
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "modernbert"])
def test_the_word_embeddings_get_a_sparse_gradient_and_the_same_update(kind, encoder_dir, monkeypatch):
    """The vocabulary-sized table's gradient comes back sparse and is added
    into a buffer the shim keeps (no table allocated per backward), with the
    weights a dense gradient gives."""
    results = []
    for sparse in (True, False):
        if not sparse:
            monkeypatch.setattr(torch.nn.Embedding, "sparse", property(lambda self: False, lambda self, value: None), raising=False)
        nlp = make_nlp(encoder_dir(kind), max_pieces=64)  # several groups of windows per batch
        egs = examples(nlp, 8)
        nlp.initialize(lambda: egs)
        optimizer = Adam(0.001)
        for _ in range(2):
            nlp.update(egs, sgd=optimizer, drop=0.0)
        shim = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0]
        table = shim.module.transformer.get_input_embeddings().weight
        kept = [name for name, grad in shim._dense_grads.items() if grad.shape == table.shape]
        assert bool(kept) is sparse
        results.append(snapshot(nlp))
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, atol=1e-6, rtol=1e-5)


def test_param_groups_freeze_embeddings_and_first_layer_and_scale_learn_rates(encoder_dir, tmp_path):
    groups = {
        "frozen": [f"{ENCODER}.embeddings.*", f"{ENCODER}.encoder.layer.0.*"],
        "learn_rate_multipliers": {f"{ENCODER}.encoder.layer.1.*": 0.5},
    }
    nlp = make_nlp(encoder_dir("bert"), param_groups=groups)
    egs = examples(nlp, 8)
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.001)
    before = snapshot(nlp)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer, drop=0.1)
    after = snapshot(nlp)
    for name in before:
        frozen = name.startswith(("transformer.embeddings.", "transformer.encoder.layer.0."))
        assert torch.equal(before[name], after[name]) is frozen, name
    shim = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0]
    assert shim.learn_rate_multipliers["transformer.encoder.layer.1.output.dense.weight"] == 0.5
    # Loaded from disk, the encoder is rebuilt and its groups applied again.
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    params = encoder_params(loaded)
    assert not params["transformer.embeddings.word_embeddings.weight"].requires_grad
    assert params["transformer.encoder.layer.1.output.dense.weight"].requires_grad
    assert loaded.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0].learn_rate_multipliers[
        "transformer.encoder.layer.1.output.dense.weight"] == 0.5


def test_a_param_group_pattern_that_matches_nothing_is_named_at_initialize(encoder_dir):
    nlp = make_nlp(encoder_dir("bert"), param_groups={"frozen": [f"{ENCODER}.nothing.*"]})
    with pytest.raises(ValueError, match=r"frozen: the pattern 'hf_encoder.transformer.nothing.\*' matches no parameter"):
        nlp.initialize(lambda: examples(nlp, 4))


def test_layer_decay_is_one_setting(encoder_dir):
    nlp = make_nlp(encoder_dir("modernbert"), layer_decay=0.5)
    nlp.initialize(lambda: examples(nlp, 4))
    multipliers = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0].builtin_learn_rate_multipliers
    assert multipliers["transformer.layers.1.attn.Wqkv.weight"] == 1.0
    assert multipliers["transformer.layers.0.attn.Wqkv.weight"] == 0.5
    assert multipliers["transformer.embeddings.tok_embeddings.weight"] == 0.25
    assert "transformer.final_norm.weight" not in multipliers


def test_layer_decay_and_param_group_multipliers_multiply(encoder_dir, monkeypatch):
    """A ParamGroups multiplier on the encoder scales its layer decay, before
    and after the pipeline is saved and loaded (the encoder is rebuilt)."""
    layer0, top = "transformer.layers.0.attn.Wqkv.weight", "transformer.layers.1.attn.Wqkv.weight"
    nlp = make_nlp(encoder_dir("modernbert"), layer_decay=0.5,
                   param_groups={"learn_rate_multipliers": {"hf_encoder.*": 0.1}})
    egs = examples(nlp, 4)
    nlp.initialize(lambda: egs)
    used = {}

    def record(optimizer, shim_id, names, params, grads, lr_scales, cache):
        used.update(zip(names, lr_scales))
        return fused_step(optimizer, shim_id, names, params, grads, lr_scales, cache)

    fused_step = torch_shim.fused_step
    monkeypatch.setattr(torch_shim, "fused_step", record)
    nlp.update(egs, sgd=Adam(0.001), drop=0.0)
    assert used[layer0] == pytest.approx(0.05) and used[top] == pytest.approx(0.1)
    used.clear()
    loaded = make_nlp(encoder_dir("modernbert"), layer_decay=0.5,
                      param_groups={"learn_rate_multipliers": {"hf_encoder.*": 0.1}}).from_bytes(nlp.to_bytes())
    loaded.update(egs, sgd=Adam(0.001), drop=0.0)
    assert used[layer0] == pytest.approx(0.05) and used[top] == pytest.approx(0.1)


def test_saved_pipelines_load_without_the_encoder_files(encoder_dir, tmp_path):
    """The saved pipeline holds the encoder's config, tokenizer files and
    weights: it loads with the directory it was trained from gone (a fresh
    process with the hub offline: tests/cli/test_transformer_cli.py)."""
    source = tmp_path / "encoder"
    shutil.copytree(encoder_dir("xlm-roberta"), source)
    nlp, optimizer, egs = trained(source, steps=2)
    docs = [eg.predicted for eg in egs[:5]]
    with nlp.use_params(optimizer.averages):
        nlp.to_disk(tmp_path / "pipeline")
        expected = scores(nlp, docs)
    shutil.rmtree(source)
    loaded = spacy.load(tmp_path / "pipeline")
    for a, b in zip(scores(loaded, docs), expected):
        numpy.testing.assert_array_equal(a, b)
    saved = {p.name for p in (tmp_path / "pipeline" / "torch_ner").iterdir()}
    assert saved == {"cfg", "model"}


def is_encoder_blob(blob: bytes) -> bool:
    """The encoder's saved map, not a head's safetensors."""
    try:
        return isinstance(srsly.msgpack_loads(blob), dict)
    except Exception:
        return False


def with_encoder_blob(component_bytes: bytes, change) -> bytes:
    """The component's bytes with its saved encoder's fields changed."""
    msg = srsly.msgpack_loads(component_bytes)
    model = srsly.msgpack_loads(msg["model"])
    for blobs in model["shims"]:
        if blobs and is_encoder_blob(blobs[0]):
            encoder = srsly.msgpack_loads(blobs[0])
            change(encoder)
            blobs[0] = srsly.msgpack_dumps(encoder)
    msg["model"] = srsly.msgpack_dumps(model)
    return srsly.msgpack_dumps(msg)


def test_a_failed_load_leaves_the_component_unchanged(encoder_dir):
    nlp, optimizer, egs = trained(encoder_dir("distilbert"), steps=1)
    pipe = nlp.get_pipe("torch_ner")
    good = pipe.to_bytes()
    bert_weights = srsly.msgpack_loads(srsly.msgpack_loads(make_trained_bytes(encoder_dir("bert")))["model"])
    other_weights = srsly.msgpack_loads([b for b in bert_weights["shims"] if b and is_encoder_blob(b[0])][0][0])["weights"]

    def nan_weights(encoder):
        tensors = safetensors_load(encoder["weights"])
        tensors["transformer.transformer.layer.1.ffn.lin1.bias"][0] = float("nan")
        encoder["weights"] = safetensors_save(tensors)

    def wider(encoder):
        config = json.loads(encoder["config"])
        encoder["config"] = json.dumps({**config, "dim": 48, "hidden_dim": 96})

    bad = {
        "other weights": (with_encoder_blob(good, lambda e: e.update(weights=other_weights)), "missing parameters"),
        "NaN": (with_encoder_blob(good, nan_weights), "holds NaN"),
        "width": (with_encoder_blob(good, wider), "hidden size is 48 but the model's width is 32"),
        "tokenizer": (with_encoder_blob(good, lambda e: e.update(tokenizer={"tokenizer.json": b"{"})), "Could not build"),
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
    }
    docs = [eg.predicted for eg in egs[:3]]
    before, labels, params = scores(nlp, docs), pipe.labels, snapshot(nlp)
    for what, (data, message) in bad.items():
        with pytest.raises(ModelLoadError) as err:
            pipe.from_bytes(data)
        assert message in str(err.value) and "\n" not in str(err.value), what
        assert pipe.labels == labels
        for a, b in zip(scores(nlp, docs), before):
            numpy.testing.assert_array_equal(a, b)
        assert all(torch.equal(v, params[k]) for k, v in snapshot(nlp).items())
    pipe.from_bytes(good)
    for a, b in zip(scores(nlp, docs), before):
        numpy.testing.assert_array_equal(a, b)


def make_trained_bytes(path) -> bytes:
    nlp = make_nlp(path)
    nlp.initialize(lambda: examples(nlp, 4))
    return nlp.get_pipe("torch_ner").to_bytes()


def test_the_encoder_round_trips_through_bytes_into_an_unloaded_model(encoder_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nlp, _, egs = trained(encoder_dir("deberta-v2"), steps=1)
    fresh = make_nlp("no/such-encoder")
    fresh.get_pipe("torch_ner").from_bytes(nlp.get_pipe("torch_ner").to_bytes())
    docs = [eg.predicted for eg in egs[:3]]
    for a, b in zip(scores(fresh, docs), scores(nlp, docs)):
        numpy.testing.assert_array_equal(a, b)


def test_rehearse_pulls_the_encoder_back_towards_the_teacher(encoder_dir):
    nlp, optimizer, egs = trained(encoder_dir("roberta"), steps=2)
    optimizer = nlp.resume_training()
    before = snapshot(nlp)
    losses = nlp.rehearse(egs[:8], sgd=optimizer)
    assert losses["torch_ner"] >= 0
    after = snapshot(nlp)
    assert any(not torch.equal(before[k], after[k]) for k in before)


SEEN_AT_SAVE = []
OPTIMIZERS = []


@spacy.registry.optimizers("test_hf.Adam.v1")
def remembered_adam(learn_rate: float):
    OPTIMIZERS.append(Adam(learn_rate))
    return OPTIMIZERS[-1]


@spacy.registry.callbacks("test_hf.check_averages_at_save.v1")
def check_averages_at_save():
    """Whether the encoder holds the optimizer's averages each time spaCy's
    training loop saves (model-best and model-last)."""

    def before_to_disk(nlp):
        shim = nlp.get_pipe("torch_ner").model.get_ref("tok2vec").shims[0]
        averages = OPTIMIZERS[-1].averages or {}
        keys = [(shim.id, name) for name, _ in shim.module.named_parameters()]
        if all(key in averages for key in keys):
            SEEN_AT_SAVE.append(all(
                numpy.array_equal(p.detach().numpy().ravel(), averages[(shim.id, name)].ravel())
                for name, p in shim.module.named_parameters()
            ))
        return nlp

    return before_to_disk


def test_spacy_train_saves_model_best_and_model_last_with_the_averages(encoder_dir, tmp_path):
    from spacy.cli.train import train

    nlp = spacy.blank("en")
    for split, n in (("train", 16), ("dev", 8)):
        docs = list(DocBin().from_disk(DATA / "btc-sample" / f"{split}.spacy").get_docs(nlp.vocab))[:n]
        DocBin(docs=docs).to_disk(tmp_path / f"{split}.spacy")
    config = Config().from_disk(Path(__file__).resolve().parents[3] / "configs" / "ner_transformer.cfg", interpolate=False)
    config["training"]["optimizer"] = {"@optimizers": "test_hf.Adam.v1", "learn_rate": 0.001}
    config["training"]["before_to_disk"] = {"@callbacks": "test_hf.check_averages_at_save.v1"}
    config["training"].update(max_steps=4, eval_frequency=2)
    config.to_disk(tmp_path / "config.cfg")
    SEEN_AT_SAVE.clear()
    train(tmp_path / "config.cfg", tmp_path / "out", overrides={
        "paths.train": str(tmp_path / "train.spacy"), "paths.dev": str(tmp_path / "dev.spacy"),
        "encoder.name": str(encoder_dir("bert")), "encoder.width": WIDTH})
    assert len(SEEN_AT_SAVE) >= 2 and all(SEEN_AT_SAVE)
