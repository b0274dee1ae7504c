"""A failed load of a torch component changes nothing: not its labels, cfg,
attrs, weights or predictions; every bad file gets one clear error; and
every cfg key is checked where it is set (`pipe.cfg[key] = value`, the
constructor's settings) and where it is loaded, with an error that names the
key, the value and what is allowed."""
import gc
import json
import pickle
import re
from pathlib import Path

import numpy
import pytest
import spacy
import srsly

from spacy_pytorch_shim.models.serialization import ModelLoadError
from spacy_pytorch_shim.pipeline import TorchEntityRecognizer

TOK2VEC = {"width": 16, "rows": [200, 50, 50, 50], "encoder": {"width": 16, "depth": 1}}
# The text classifiers' default models have no tok2vec: these tests add one.
TEXTCAT_TOK2VEC = {"@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1", **TOK2VEC, "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", **TOK2VEC["encoder"]}}
CONFIGS = {
    "torch_textcat": {"model": {"tok2vec": TEXTCAT_TOK2VEC, "hidden_width": 16, "ngram_rows": 256}},
    "torch_textcat_multilabel": {"model": {"tok2vec": TEXTCAT_TOK2VEC, "hidden_width": 16, "ngram_rows": 256}},
    "torch_ner": {"model": {"tok2vec": TOK2VEC, "hidden_width": 16}},
}
TEXTS = ["Alice lives in Paris", "what a great day", "I hate it"]


def make_nlp(factory, config=None, labels=("A", "B")):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory, name="pipe", config=config or CONFIGS[factory])
    if labels is not None:
        nlp.get_pipe("pipe").initialize(lambda: (x for x in []), labels=list(labels))
    return nlp


def snapshot(nlp):
    """Everything a load may change, as comparable plain data."""
    pipe = nlp.get_pipe("pipe")
    docs = [nlp.make_doc(t) for t in TEXTS]
    scores = pipe.predict(docs)
    scores = [numpy.asarray(s).tolist() for s in scores] if isinstance(scores, list) else numpy.asarray(scores).tolist()
    attrs = [
        {k: (v.tolist() if isinstance(v, numpy.ndarray) else v) for k, v in node.attrs.items()}
        for node in pipe.model.walk()
    ]
    return json.dumps(pipe.cfg, sort_keys=True), repr(attrs), pipe.model.to_bytes(), scores


@pytest.fixture(params=sorted(CONFIGS))
def factory(request):
    return request.param


def saved(factory, tmp_path, labels=("A", "B", "C"), config=None):
    nlp = make_nlp(factory, config, labels)
    nlp.to_disk(tmp_path / "saved")
    return tmp_path / "saved"


def test_truncated_model_file_leaves_the_pipeline_unchanged(factory, tmp_path):
    """The saved cfg has another label: it must not be taken, nor the resize."""
    path = saved(factory, tmp_path)
    model_file = path / "pipe" / "model"
    model_file.write_bytes(model_file.read_bytes()[:-100])
    nlp = make_nlp(factory)
    before = snapshot(nlp)
    with pytest.raises(ModelLoadError, match=r"Could not read torch weights from .*pipe/model \(component 'pipe'\)"):
        nlp.from_disk(path)
    assert gc.isenabled()
    assert nlp.get_pipe("pipe").labels == ("A", "B")
    assert snapshot(nlp) == before


def test_corrupt_bytes_leave_the_component_unchanged(factory, tmp_path):
    source = make_nlp(factory, labels=("A", "B", "C")).get_pipe("pipe")
    data = source.to_bytes()
    msg = srsly.msgpack_loads(data)
    model_msg = srsly.msgpack_loads(msg["model"])
    last_torch = max(i for i, shims in enumerate(model_msg["shims"]) if shims)
    model_msg["shims"][last_torch] = []  # the last torch module's data removed
    msg["model"] = srsly.msgpack_dumps(model_msg)
    nlp = make_nlp(factory)
    before = snapshot(nlp)
    for bad in (data[:-1], data[: len(data) // 3], b"", b"\x00" * 64, srsly.msgpack_dumps(msg)):
        with pytest.raises(ModelLoadError):
            nlp.get_pipe("pipe").from_bytes(bad)
        assert gc.isenabled()
        assert snapshot(nlp) == before


def test_nlp_from_bytes_failure_leaves_the_component_unchanged(factory):
    other = make_nlp(factory, labels=("A", "B", "C"))
    data = srsly.msgpack_loads(other.to_bytes())
    pipe_msg = srsly.msgpack_loads(data["pipe"])
    pipe_msg["model"] = pipe_msg["model"][:-50]
    data["pipe"] = srsly.msgpack_dumps(pipe_msg)
    nlp = make_nlp(factory)
    before = snapshot(nlp)
    with pytest.raises(ModelLoadError, match="component 'pipe'"):
        nlp.from_bytes(srsly.msgpack_dumps(data))
    assert snapshot(nlp) == before


def test_textcat_with_tok2vec_and_ngrams_is_never_half_loaded(tmp_path):
    """Three torch modules: a bad last one must not leave the first two loaded."""
    factory = "torch_textcat"
    path = saved(factory, tmp_path, labels=("A", "B"))
    model_file = path / "pipe" / "model"
    msg = srsly.msgpack_loads(model_file.read_bytes())
    torch_nodes = [i for i, shims in enumerate(msg["shims"]) if shims]
    assert len(torch_nodes) == 3
    msg["shims"][torch_nodes[-1]][0] = msg["shims"][torch_nodes[-1]][0][:-4]
    model_file.write_bytes(srsly.msgpack_dumps(msg))
    nlp = make_nlp(factory)
    before = snapshot(nlp)
    with pytest.raises(ModelLoadError, match="torch module of node"):
        nlp.from_disk(path)
    assert snapshot(nlp) == before


def test_data_saved_with_other_ngram_rows_is_refused_and_changes_nothing(tmp_path):
    config = {"model": {**CONFIGS["torch_textcat"]["model"], "ngram_rows": 512}}
    path = saved("torch_textcat", tmp_path, labels=("A", "B"), config=config)
    nlp = make_nlp("torch_textcat")
    before = snapshot(nlp)
    with pytest.raises(ModelLoadError, match=r"'output.weight' has shape \(512, 2\) in the data but \(256, 2\)"):
        nlp.from_disk(path)
    assert snapshot(nlp) == before


@pytest.mark.parametrize(
    "cfg, message",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"labels": [1, 2]}', "non-empty strings"),
        ('{"labels": ["A", "A"]}', r"cfg\['labels'\] must be a list of unique non-empty strings, got \['A', 'A'\]"),
        ('{"labels": ["A"], "masked_labels": ["Z"]}', r"cfg\['masked_labels'\] has \['Z'\], which are not among the labels"),
        ('{"labels": ["A", "B"], "positive_label": "Z"}', r"cfg\['positive_label'\] is 'Z', not one of the labels"),
        ('{"labels": ["A"], "evil": 1}', "unknown cfg keys"),
        ('{"labels": ["A"], "threshold": "high"}', "must be a number"),
    ],
)
def test_bad_cfg_is_refused_before_anything_changes(tmp_path, cfg, message):
    path = saved("torch_textcat", tmp_path)
    (path / "pipe" / "cfg").write_text(cfg)
    nlp = make_nlp("torch_textcat")
    before = snapshot(nlp)
    with pytest.raises(ModelLoadError, match=message):
        nlp.from_disk(path)
    assert snapshot(nlp) == before


def test_multilabel_data_is_refused_by_an_exclusive_component(tmp_path):
    path = saved("torch_textcat_multilabel", tmp_path)
    nlp = make_nlp("torch_textcat")
    before = snapshot(nlp)
    with pytest.raises(ModelLoadError, match=r"cfg\['exclusive'\] must be true \(exclusive classes; a multi-label component's cfg has false\), got False"):
        nlp.get_pipe("pipe").from_disk(path / "pipe", exclude=["vocab"])
    assert snapshot(nlp) == before


def test_missing_model_file_is_named(tmp_path):
    path = saved("torch_ner", tmp_path)
    (path / "pipe" / "model").unlink()
    nlp = make_nlp("torch_ner")
    with pytest.raises(ModelLoadError, match=r"pipe/model .*is missing"):
        nlp.from_disk(path)


def test_good_load_with_more_labels_still_works(factory, tmp_path):
    path = saved(factory, tmp_path, labels=("A", "B", "C"))
    expected = snapshot(spacy.load(path))
    nlp = make_nlp(factory)
    nlp.from_disk(path)
    assert nlp.get_pipe("pipe").labels == ("A", "B", "C")
    assert snapshot(nlp) == expected


def test_non_finite_weights_in_a_pipeline_are_refused(tmp_path):
    nlp = make_nlp("torch_ner")
    pipe = nlp.get_pipe("pipe")
    head = [n for n in pipe.model.walk() if n.name == "torch_ner_head"][0]
    import torch

    with torch.no_grad():
        head.shims[0].module.output.bias[0] = float("nan")
    nlp.to_disk(tmp_path / "nan")
    fresh = make_nlp("torch_ner")
    before = snapshot(fresh)
    with pytest.raises(ModelLoadError, match="'output.bias' holds NaN"):
        fresh.from_disk(tmp_path / "nan")
    assert snapshot(fresh) == before
    fresh.get_pipe("pipe").from_disk(tmp_path / "nan" / "pipe", exclude=["vocab"], allow_nonfinite=True)


SAVED_BY_0_1_0 = Path(__file__).parent / "data" / "saved-by-0.1.0"


def test_pipelines_saved_by_the_previous_code_still_load_and_predict_the_same():
    """Written by tests/pipeline/data/make_saved_by_0.1.0.py at commit 25f4c05
    (before the hardened loading): the format is unchanged, only checked."""
    expected = json.loads((SAVED_BY_0_1_0 / "expected.json").read_text())
    nlp = spacy.load(SAVED_BY_0_1_0)
    assert nlp.get_pipe("textcat").labels == ("POS", "NEG", "EXTRA")
    for text, cats, ents in zip(expected["texts"], expected["cats"], expected["ents"]):
        doc = nlp(text)
        assert doc.cats == pytest.approx(cats, abs=1e-5)
        assert [[e.start_char, e.end_char, e.label_] for e in doc.ents] == ents


def test_corrupt_vocab_bytes_keep_gc_enabled():
    nlp = make_nlp("torch_ner")
    pipe = nlp.get_pipe("pipe")
    msg = srsly.msgpack_loads(pipe.to_bytes())
    msg["vocab"] = msg["vocab"][:-5]
    with pytest.raises(Exception):
        pipe.from_bytes(srsly.msgpack_dumps(msg))
    assert gc.isenabled()


# ------------------------------------------------ a resize_output of its own
def _replacing_resize(original):
    """A resize_output that returns a new, resized model and leaves the one
    it was given as it was (spaCy's contract: the caller assigns the result)."""
    import copy

    def resize(model, n_out):
        new = original(copy.deepcopy(model), n_out)
        new.attrs["resize_output"] = resize
        return new

    return resize


def test_the_model_resize_output_returns_is_the_components_model(factory):
    nlp = make_nlp(factory, labels=None)
    pipe = nlp.get_pipe("pipe")
    pipe.model.attrs["resize_output"] = _replacing_resize(pipe.model.attrs["resize_output"])
    before = pipe.model
    pipe.initialize(lambda: (x for x in []), labels=["A", "B", "C"])
    assert pipe.model is not before
    assert pipe.model.get_dim("nO") == pipe.n_outputs(3)
    pipe.add_label("D")  # resized at the next use of the model
    assert pipe.model.get_dim("nO") == pipe.n_outputs(4)
    scores = pipe.predict([nlp.make_doc(t) for t in TEXTS])
    assert all(numpy.asarray(s).shape[-1] == pipe.n_outputs(4) for s in (scores if isinstance(scores, list) else [scores]))


def test_loading_through_a_resize_output_of_its_own(factory, tmp_path):
    path = saved(factory, tmp_path)
    expected = spacy.load(path).get_pipe("pipe").model.to_bytes()
    nlp = make_nlp(factory, labels=None)
    pipe = nlp.get_pipe("pipe")
    pipe.model.attrs["resize_output"] = _replacing_resize(pipe.model.attrs["resize_output"])
    pipe.from_disk(path / "pipe")
    assert pipe.labels == ("A", "B", "C")
    assert pipe.model.get_dim("nO") == pipe.n_outputs(3)
    assert pipe.model.to_bytes() == expected


def test_failed_load_through_a_resize_output_of_its_own_resizes_nothing(factory, tmp_path):
    """The data is checked before the model is resized, also when the resize
    function is not ours (it runs on a copy first)."""
    path = saved(factory, tmp_path)
    model_file = path / "pipe" / "model"
    model_file.write_bytes(model_file.read_bytes()[:-100])
    nlp = make_nlp(factory)
    pipe = nlp.get_pipe("pipe")
    calls = []
    original = pipe.model.attrs["resize_output"]

    def in_place(model, n_out):
        calls.append(n_out)
        return original(model, n_out)

    pipe.model.attrs["resize_output"] = in_place
    before = snapshot(nlp)
    model = pipe.model
    with pytest.raises(ModelLoadError):
        pipe.from_disk(path / "pipe")
    assert pipe.model is model
    assert snapshot(nlp) == before
    assert pipe.model.get_dim("nO") == pipe.n_outputs(2)


def test_pipeline_saved_before_initialize_with_labels_loads(factory, tmp_path):
    """As spaCy's components: labels added, never initialized, saved, loaded
    (from disk and from bytes), then initialized."""
    nlp = make_nlp(factory, labels=None)
    for label in ("A", "B"):
        nlp.get_pipe("pipe").add_label(label)
    nlp.to_disk(tmp_path / "p")
    loaded = [spacy.load(tmp_path / "p"), make_nlp(factory, labels=None).from_bytes(nlp.to_bytes())]
    for other in loaded:
        pipe = other.get_pipe("pipe")
        assert pipe.labels == ("A", "B") and not pipe.is_initialized
        other.initialize()
        assert pipe.labels == ("A", "B")
        assert snapshot(other)[3]


def test_reordered_labels_in_the_cfg_are_refused(factory, tmp_path):
    """The weights keep the labels their outputs belong to: a cfg whose
    labels were reordered would attach every score to the wrong label."""
    path = saved(factory, tmp_path)
    cfg = srsly.read_json(path / "pipe" / "cfg")
    srsly.write_json(path / "pipe" / "cfg", {**cfg, "labels": ["C", "B", "A"]})
    nlp = make_nlp(factory, labels=("C", "B", "A"))
    before = snapshot(nlp)
    message = r"have outputs for the labels \['A', 'B', 'C'\], in that order, but .* has the labels \['C', 'B', 'A'\]"
    with pytest.raises(ModelLoadError, match=message):
        nlp.from_disk(path)
    assert snapshot(nlp) == before
    with pytest.raises(ModelLoadError, match=message):
        spacy.load(path)


# ------------------------------------------------------------ cfg checks
NAN, INF = float("nan"), float("inf")
# Per component: (key, bad value); the values JSON cannot hold are checked
# on assignment only.
BAD = {
    "torch_ner": [
        ("labels", ["A", "A"]),
        ("labels", "A"),
        ("masked_labels", [1]),
        ("initialized", "yes"),
        ("outside_loss_weight", 0),
        ("outside_loss_weight", 1.5),
        ("outside_loss_weight", "0.3"),
        ("outside_loss_weight", True),
        ("outside_loss_weight", NAN),
        ("incorrect_spans_key", 5),
        ("incorrect_spans_key", ""),
        ("spans_key", ["scores"]),
        ("spans_key", 1.0),
    ],
    "torch_textcat": [
        ("exclusive", False),
        ("threshold", 1.5),
        ("threshold", "high"),
        ("threshold", NAN),
        ("positive_label", 3),
        ("positive_label", ""),
    ],
    "torch_textcat_multilabel": [
        ("exclusive", True),
        ("threshold", -0.1),
        ("logit_adjustment", -1),
        ("logit_adjustment", INF),
        ("logit_adjustment", NAN),
        ("logit_adjustment", True),
        ("label_log_odds", {"A": INF}),
        ("label_log_odds", [1.0]),
        ("label_log_odds", {"A": "high"}),
    ],
}
CASES = [(factory, key, value) for factory, bad in BAD.items() for key, value in bad]


def _message(key, value):
    return rf"cfg\['{key}'\] must be .*, got {re.escape(repr(value))}"


def _in_json(value):
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("factory, key, value", CASES)
def test_bad_value_set_is_refused_naming_key_value_and_what_is_allowed(factory, key, value):
    pipe = make_nlp(factory).get_pipe("pipe")
    before = dict(pipe.cfg)
    with pytest.raises(ValueError, match=_message(key, value)):
        pipe.cfg[key] = value
    with pytest.raises(ValueError, match=_message(key, value)):
        pipe.cfg.update({key: value})
    assert dict(pipe.cfg) == before


@pytest.mark.parametrize("factory, key, value", [case for case in CASES if _in_json(case[2])])
def test_bad_value_in_a_saved_cfg_is_refused_on_load(factory, key, value, tmp_path):
    nlp = make_nlp(factory)
    nlp.to_disk(tmp_path / "p")
    cfg = srsly.read_json(tmp_path / "p" / "pipe" / "cfg")
    srsly.write_json(tmp_path / "p" / "pipe" / "cfg", {**cfg, key: value})
    with pytest.raises(ModelLoadError, match=_message(key, value)):
        spacy.load(tmp_path / "p")


@pytest.mark.parametrize("factory", sorted(CONFIGS))
def test_unknown_key_is_refused_and_the_cfg_survives_pickle(factory):
    pipe = make_nlp(factory).get_pipe("pipe")
    with pytest.raises(ValueError, match=r"the cfg has no key 'pos_weight' \(its keys: \["):
        pipe.cfg["pos_weight"] = [1.0]
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy.cfg == pipe.cfg
    with pytest.raises(ValueError, match="initialized"):
        copy.cfg["initialized"] = None


def test_constructor_settings_are_checked_by_the_same_rules():
    model = make_nlp("torch_ner").get_pipe("pipe").model
    with pytest.raises(ValueError, match=r"cfg\['spans_key'\] must be null or a non-empty string \(a doc.spans key\), got 3"):
        TorchEntityRecognizer(spacy.blank("en").vocab, model, spans_key=3)
