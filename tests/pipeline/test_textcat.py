"""torch_textcat and torch_textcat_multilabel: training, add_label, EMA,
serialization and bad input."""
import numpy
import pytest
import spacy
import srsly
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.models.serialization import ModelLoadError

TRAIN = [
    ("I love this film so much", {"POS": 1.0, "NEG": 0.0}),
    ("what a great wonderful day", {"POS": 1.0, "NEG": 0.0}),
    ("this is terrible and awful", {"POS": 0.0, "NEG": 1.0}),
    ("I hate it, worst thing ever", {"POS": 0.0, "NEG": 1.0}),
]
NEW = [
    ("where is my parcel", {"POS": 0.0, "NEG": 0.0, "QUESTION": 1.0}),
    ("how do I get there", {"POS": 0.0, "NEG": 0.0, "QUESTION": 1.0}),
]
TOK2VEC = {
    "@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1",
    "width": 32,
    "rows": [500, 100, 100, 100],
    "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", "width": 32, "depth": 1},
}
CFG = {"model": {"tok2vec": TOK2VEC, "hidden_width": 32, "ngram_rows": 1024}}


def make_nlp(factory="torch_textcat"):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory, name="textcat", config=CFG)
    return nlp


def examples(nlp, data):
    return [Example.from_dict(nlp.make_doc(text), {"cats": cats}) for text, cats in data]


def train(nlp, egs, optimizer, steps=40):
    for _ in range(steps):
        nlp.update(egs, sgd=optimizer, drop=0.0)


def cats(nlp, texts):
    return [nlp(text).cats for text in texts]


@pytest.fixture(params=["torch_textcat", "torch_textcat_multilabel"])
def trained(request):
    nlp = make_nlp(request.param)
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.01)
    train(nlp, egs, optimizer)
    return nlp, optimizer


def test_initialize_infers_labels_and_learns_training_data(trained):
    nlp, _ = trained
    assert nlp.get_pipe("textcat").labels == ("POS", "NEG")
    for text, gold in TRAIN:
        predicted = nlp(text).cats
        best = max(gold, key=gold.get)
        assert predicted[best] > 0.8, (text, predicted)


def test_add_label_after_training_keeps_old_scores_then_learns_it(trained):
    nlp, optimizer = trained
    textcat = nlp.get_pipe("textcat")
    texts = [t for t, _ in TRAIN + NEW]
    before = cats(nlp, texts)
    assert textcat.add_label("QUESTION") == 1
    assert textcat.add_label("QUESTION") == 0
    after = cats(nlp, texts)
    for b, a in zip(before, after):
        for label in ("POS", "NEG"):
            assert abs(a[label] - b[label]) <= 1e-6
        assert a["QUESTION"] == 0.0
    # Resume training with the same optimizer: the new label is learned.
    egs = examples(nlp, TRAIN + NEW)
    train(nlp, egs, optimizer)
    for text, _ in NEW:
        assert nlp(text).cats["QUESTION"] > 0.5
    with nlp.select_pipes(enable=["textcat"]):
        with nlp.use_params(optimizer.averages):
            assert nlp(NEW[0][0]).cats["QUESTION"] > 0.0


def test_add_label_then_train_with_a_new_optimizer(trained):
    nlp, _ = trained
    nlp.get_pipe("textcat").add_label("QUESTION")
    train(nlp, examples(nlp, TRAIN + NEW), Adam(0.01))
    assert nlp(NEW[1][0]).cats["QUESTION"] > 0.5


def test_add_label_before_training():
    nlp = make_nlp()
    textcat = nlp.get_pipe("textcat")
    for label in ("POS", "NEG", "QUESTION"):
        textcat.add_label(label)
    egs = examples(nlp, TRAIN + NEW)
    nlp.initialize(lambda: egs)
    assert textcat.labels == ("POS", "NEG", "QUESTION")
    train(nlp, egs, Adam(0.01))
    assert nlp(NEW[0][0]).cats["QUESTION"] > 0.5


def test_initialize_with_labels_in_another_order_keeps_known_order():
    nlp = make_nlp()
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    nlp.get_pipe("textcat").initialize(lambda: egs, labels=["NEG", "OTHER", "POS"])
    assert nlp.get_pipe("textcat").labels == ("POS", "NEG", "OTHER")


def test_use_params_evaluates_with_averages(trained):
    """Compare logits: trained probabilities can saturate at 1.0."""
    nlp, optimizer = trained
    textcat = nlp.get_pipe("textcat")
    docs = [nlp.make_doc(text) for text, _ in TRAIN]
    raw = textcat.model.predict(docs)
    with nlp.use_params(optimizer.averages):
        averaged = textcat.model.predict(docs)
    assert not numpy.allclose(averaged, raw)
    assert numpy.array_equal(textcat.model.predict(docs), raw)


def test_disk_and_bytes_round_trip_with_added_label(trained, tmp_path):
    nlp, optimizer = trained
    nlp.get_pipe("textcat").add_label("QUESTION")
    train(nlp, examples(nlp, TRAIN + NEW), optimizer, steps=3)
    texts = [t for t, _ in TRAIN + NEW]
    expected = cats(nlp, texts)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("textcat").labels == ("POS", "NEG", "QUESTION")
    assert cats(loaded, texts) == expected
    other = make_nlp(nlp.get_pipe("textcat").__class__ and nlp.config["components"]["textcat"]["factory"])
    other.from_bytes(nlp.to_bytes())
    assert cats(other, texts) == expected


def test_odd_docs_get_valid_scores(trained):
    nlp, _ = trained
    multilabel = not nlp.get_pipe("textcat").exclusive
    for text in ["", "   ", "\n\t", "word", " ".join(["token"] * 10_000)]:
        scores = nlp(text).cats
        assert set(scores) == {"POS", "NEG"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
        if not multilabel and text:
            assert abs(sum(scores.values()) - 1.0) < 1e-5
    # A doc without tokens scores 0.0, as with spaCy's textcat, alone or in a batch.
    assert nlp("").cats == {"POS": 0.0, "NEG": 0.0}
    docs = list(nlp.pipe(["", "a b", "   "]))
    assert all(set(doc.cats) == {"POS", "NEG"} for doc in docs)
    assert docs[0].cats == {"POS": 0.0, "NEG": 0.0} and sum(docs[1].cats.values()) > 0


def test_unknown_and_missing_gold_labels(trained):
    nlp, optimizer = trained
    egs = [
        Example.from_dict(nlp.make_doc("a new thing"), {"cats": {"UNSEEN": 1.0, "POS": 0.0, "NEG": 0.0}}),
        Example.from_dict(nlp.make_doc("great movie"), {"cats": {"POS": 1.0}}),
    ]
    losses = nlp.update(egs, sgd=optimizer)
    assert numpy.isfinite(losses["textcat"])
    # As spaCy's ner: a gold label the component does not know is added and trained.
    textcat = nlp.get_pipe("textcat")
    assert textcat.labels == ("POS", "NEG", "UNSEEN") and textcat.cfg["masked_labels"] == []
    train(nlp, egs, optimizer, steps=20)
    assert nlp("a new thing").cats["UNSEEN"] > 0.5


def test_multilabel_gold_outside_unit_interval_is_a_clear_error():
    nlp = make_nlp("torch_textcat_multilabel")
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    bad = [Example.from_dict(nlp.make_doc("oops"), {"cats": {"POS": 1.5, "NEG": 0.0}})]
    with pytest.raises(ValueError, match=r"1\.5.*'POS'.*\[0, 1\]"):
        nlp.update(bad)


def test_exclusive_data_with_two_positives_is_a_clear_error():
    nlp = make_nlp()
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    bad = [Example.from_dict(nlp.make_doc("both"), {"cats": {"POS": 1.0, "NEG": 1.0}})]
    with pytest.raises(ValueError, match="torch_textcat_multilabel"):
        nlp.update(bad)


def test_factory_and_model_must_agree_on_exclusivity():
    nlp = spacy.blank("en")
    config = {"model": {**CFG["model"], "exclusive_classes": False}}
    with pytest.raises(ValueError, match="exclusive_classes = true"):
        nlp.add_pipe("torch_textcat", config=config)


@pytest.fixture(params=["torch_textcat", "torch_textcat_multilabel"])
def initialized(request):
    nlp = make_nlp(request.param)
    nlp.initialize(lambda: examples(nlp, TRAIN))
    return nlp


def test_get_loss_takes_what_predict_returns(initialized):
    """spaCy's contract: get_loss(examples, predict(docs)). The loss is the
    cross-entropy of those probabilities (averaged over examples, so a batch
    repeated twice has the same loss), the gradient the model's (for its
    logits), and update's loss is the same number."""
    nlp = initialized
    pipe = nlp.get_pipe("textcat")
    egs = examples(nlp, TRAIN)
    probs = pipe.predict([eg.predicted for eg in egs])
    loss, d_logits = pipe.get_loss(egs, probs)
    truths = numpy.asarray([[cats["POS"], cats["NEG"]] for _, cats in TRAIN], dtype="f")
    if pipe.exclusive:
        expected = -(truths * numpy.log(probs + 1e-8)).sum() / len(egs)
    else:
        expected = -(truths * numpy.log(probs + 1e-8) + (1 - truths) * numpy.log(1 - probs + 1e-8)).sum() / len(egs)
    assert loss == pytest.approx(float(expected), rel=1e-5)
    numpy.testing.assert_allclose(d_logits, (probs - truths) / len(egs), rtol=1e-5, atol=1e-7)
    doubled, _ = pipe.get_loss(egs * 2, numpy.concatenate([probs, probs]))
    assert doubled == pytest.approx(loss, rel=1e-6)
    losses = pipe.update(egs, drop=0.0)  # no sgd: the weights stay
    assert losses["textcat"] == pytest.approx(loss, rel=1e-5)


def test_positive_label_for_a_binary_exclusive_task_as_spacy():
    nlp = make_nlp()
    pipe = nlp.get_pipe("textcat")
    egs = examples(nlp, TRAIN)
    with pytest.raises(ValueError, match="E920"):
        pipe.initialize(lambda: egs, positive_label="MAYBE")
    with pytest.raises(ValueError, match="E919"):
        make_nlp().get_pipe("textcat").initialize(lambda: egs, labels=["POS", "NEG", "OTHER"], positive_label="POS")
    pipe.initialize(lambda: egs, positive_label="POS")
    assert pipe.cfg["positive_label"] == "POS"
    train(nlp, egs, Adam(0.01), steps=5)
    scores = nlp.evaluate(egs)
    # The scorer's cats_score is the positive label's F, as spaCy's textcat scores it.
    assert scores["cats_score_desc"] == "F (POS)"
    assert scores["cats_score"] == scores["cats_f_per_type"]["POS"]["f"]
    loaded = make_nlp().from_bytes(nlp.to_bytes())
    assert loaded.get_pipe("textcat").cfg["positive_label"] == "POS"
    multilabel = make_nlp("torch_textcat_multilabel").get_pipe("textcat")
    with pytest.raises(TypeError):
        multilabel.initialize(lambda: egs, positive_label="POS")
    assert "positive_label" not in multilabel.cfg


def test_exclusive_textcat_needs_two_labels_as_spacy():
    nlp = make_nlp()
    nlp.get_pipe("textcat").add_label("ONLY")
    with pytest.raises(ValueError, match="E867"):
        nlp.initialize()
    one = make_nlp("torch_textcat_multilabel")
    one.get_pipe("textcat").add_label("ONLY")
    one.initialize()
    assert set(one("some text").cats) == {"ONLY"}


def test_nO_follows_the_labels(initialized):
    nlp = initialized
    pipe = nlp.get_pipe("textcat")
    assert pipe.model.get_dim("nO") == 2
    pipe.add_label("QUESTION")
    assert pipe.model.get_dim("nO") == 3
    assert pipe.model.predict([nlp.make_doc("a question")]).shape == (1, 3)


def test_constructors_take_spacys_defaults():
    from spacy_pytorch_shim.pipeline.textcat import TorchMultiLabelTextCategorizer, TorchTextCategorizer

    nlp = spacy.blank("en")
    exclusive = nlp.add_pipe("torch_textcat", config=CFG).model
    textcat = TorchTextCategorizer(nlp.vocab, exclusive, threshold=0.0)
    assert textcat.name == "textcat" and textcat.scorer is not None
    multilabel = nlp.add_pipe("torch_textcat_multilabel", config=CFG).model
    textcat = TorchMultiLabelTextCategorizer(nlp.vocab, multilabel, threshold=0.5)
    assert textcat.name == "textcat_multilabel" and textcat.scorer is not None


RARE = [
    ("the parcel is late again", {"LATE": 1.0, "LOST": 0.0}),
    ("my parcel never came", {"LATE": 0.0, "LOST": 1.0}),
    ("thanks, all arrived fine", {"LATE": 0.0, "LOST": 0.0}),
    ("great service today", {"LATE": 0.0, "LOST": 0.0}),
    ("quick and friendly", {"LATE": 0.0, "LOST": 0.0}),
    ("the parcel is late", {"LATE": 1.0, "LOST": 0.0}),
    ("no complaints at all", {"LATE": 0.0}),
]


def multilabel_nlp(logit_adjustment):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_textcat_multilabel", name="textcat", config={**CFG, "logit_adjustment": logit_adjustment})
    egs = examples(nlp, RARE)
    nlp.initialize(lambda: egs)
    return nlp, egs


def test_logit_adjustment_raises_each_labels_logit_by_tau_times_its_training_log_odds():
    nlp, egs = multilabel_nlp(0.5)
    pipe = nlp.get_pipe("textcat")
    # LATE: 2 positives of 7 annotations; LOST: 1 of 6.
    assert pipe.cfg["label_log_odds"] == pytest.approx({"LATE": numpy.log(5 / 2), "LOST": numpy.log(5 / 1)})
    train(nlp, egs, Adam(0.01), steps=10)
    docs = [nlp.make_doc(text) for text, _ in RARE]
    raw = pipe._activate(pipe.model.predict(docs))
    adjusted = pipe.predict(docs)
    logit = lambda p: numpy.log(p / (1 - p))
    offsets = logit(adjusted) - logit(raw)
    assert offsets == pytest.approx(numpy.tile([0.5 * numpy.log(2.5), 0.5 * numpy.log(5.0)], (len(docs), 1)), abs=1e-3)
    # doc.cats is what predict gives; the order of each label's scores is kept.
    assert [doc.cats["LOST"] for doc in nlp.pipe(text for text, _ in RARE)] == pytest.approx(adjusted[:, 1].tolist(), abs=1e-6)
    assert list(numpy.argsort(raw[:, 0])) == list(numpy.argsort(adjusted[:, 0]))


def test_logit_adjustment_zero_is_the_models_own_probabilities_and_training_ignores_it():
    plain, egs = multilabel_nlp(0.0)
    adjusted, _ = multilabel_nlp(2.0)
    texts = [text for text, _ in RARE]
    for nlp in (plain, adjusted):
        train(nlp, examples(nlp, RARE), Adam(0.01), steps=5)
    p_plain = plain.get_pipe("textcat")
    p_adjusted = adjusted.get_pipe("textcat")
    docs = [plain.make_doc(text) for text in texts]
    assert p_plain.predict(docs) == pytest.approx(p_plain._activate(p_plain.model.predict(docs)))
    # The same seeds and updates: the models are the same, only predict differs.
    assert p_adjusted.model.predict(docs) == pytest.approx(p_plain.model.predict(docs), abs=1e-5)
    assert (p_adjusted.predict(docs) > p_plain.predict(docs)).all()


def test_logit_adjustment_survives_disk_and_bad_values_are_clear_errors(tmp_path):
    nlp, _ = multilabel_nlp(0.25)
    before = cats(nlp, ["a late parcel"])
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("textcat").cfg["label_log_odds"] == pytest.approx(nlp.get_pipe("textcat").cfg["label_log_odds"])
    assert cats(loaded, ["a late parcel"]) == before
    with pytest.raises(ValueError, match=r"cfg\['logit_adjustment'\] must be a finite number >= 0"):
        spacy.blank("en").add_pipe("torch_textcat_multilabel", config={**CFG, "logit_adjustment": -0.5})
    cfg_path = tmp_path / "p" / "textcat" / "cfg"
    saved = srsly.read_json(cfg_path)
    for key, value, message in [
        ("label_log_odds", {"LATE": "high"}, r"cfg\['label_log_odds'\] must be a mapping of labels to finite numbers"),
        ("label_log_odds", {"ELSEWHERE": 1.0}, r"cfg\['label_log_odds'\] has labels \['ELSEWHERE'\]"),
        ("logit_adjustment", -1.0, r"cfg\['logit_adjustment'\] must be a finite number >= 0"),
    ]:
        srsly.write_json(cfg_path, {**saved, key: value})
        with pytest.raises(ModelLoadError, match=message):
            spacy.load(tmp_path / "p")


@pytest.mark.parametrize("value", [float("nan"), -1.0, float("inf"), True, "0.3"])
def test_logit_adjustment_set_at_runtime_is_checked(tmp_path, value):
    nlp, _ = multilabel_nlp(0.25)
    textcat = nlp.get_pipe("textcat")
    with pytest.raises(ValueError, match=r"cfg\['logit_adjustment'\] must be a finite number >= 0 \(0: off\), got"):
        textcat.cfg["logit_adjustment"] = value
    assert textcat.cfg["logit_adjustment"] == 0.25
    assert all(numpy.isfinite(v) for v in nlp("the parcel is late").cats.values())
    nlp.to_disk(tmp_path / "p")
