"""torch_ner: valid spans, training, add_label, EMA, serialization, bad input."""
import itertools
import logging

import numpy
import pytest
import spacy
from spacy.lookups import Lookups
from spacy.tokens import Doc, Span
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.pipeline import biluo
from spacy_pytorch_shim.pipeline.biluo import biluo_constraints, decode_biluo, viterbi_biluo
from spacy_pytorch_shim.pipeline.ner import TorchEntityRecognizer

TRAIN = [
    ("Alice lives in Paris", [(0, 5, "PER"), (15, 20, "LOC")]),
    ("Bob Smith visited London today", [(0, 9, "PER"), (18, 24, "LOC")]),
    ("Paris is nice", [(0, 5, "LOC")]),
    ("I met Alice and Bob Smith", [(6, 11, "PER"), (16, 25, "PER")]),
]
NEW = [
    ("She works at Google", [(13, 19, "ORG")]),
    ("Google hired Bob Smith", [(0, 6, "ORG"), (13, 22, "PER")]),
]
CFG = {"model": {"tok2vec": {"width": 32, "rows": [500, 100, 100, 100], "encoder": {"width": 32, "depth": 2}}, "hidden_width": 32}}


def make_nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_ner", name="ner", config=CFG)
    return nlp


def examples(nlp, data):
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def train(nlp, egs, optimizer, steps=40):
    for _ in range(steps):
        nlp.update(egs, sgd=optimizer, drop=0.0)


def ents(nlp, texts):
    return [[(e.start_char, e.end_char, e.label_) for e in nlp(text).ents] for text in texts]


@pytest.fixture
def trained():
    nlp = make_nlp()
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.01)
    train(nlp, egs, optimizer)
    return nlp, optimizer


def test_learns_training_data(trained):
    nlp, _ = trained
    assert nlp.get_pipe("ner").labels == ("PER", "LOC")
    for (text, gold), predicted in zip(TRAIN, ents(nlp, [t for t, _ in TRAIN])):
        assert predicted == gold
    scores = nlp.evaluate(examples(nlp, TRAIN))
    assert scores["ents_f"] == 1.0 and set(scores["ents_per_type"]) == {"PER", "LOC"}


@pytest.mark.parametrize("decode", [viterbi_biluo, decode_biluo])
def test_decoding_always_gives_valid_biluo(decode):
    """Random scores decode into sequences that obey every BILUO constraint."""
    rng = numpy.random.default_rng(0)
    n_labels = 3
    allowed, start, end = biluo_constraints(n_labels)
    log_probs = [rng.normal(size=(n, 1 + 4 * n_labels)).astype("f") for n in (1, 2, 7, 30, 0, 5)]
    log_probs = [x - numpy.logaddexp.reduce(x, axis=1, keepdims=True) for x in log_probs]
    for x, tags in zip(log_probs, decode(log_probs, n_labels)):
        assert len(tags) == len(x)
        if not len(tags):
            continue
        assert start[tags[0]] == 0 and end[tags[-1]] == 0
        assert all(allowed[a, b] == 0 for a, b in zip(tags[:-1], tags[1:]))


def test_viterbi_picks_the_best_valid_sequence():
    # Token scores prefer B-X then O, which is invalid; best valid is U-X, O.
    x = numpy.log(numpy.asarray([[0.05, 0.6, 0.0, 0.0, 0.35], [0.9, 0.0, 0.05, 0.05, 0.0]], dtype="f") + 1e-9)
    assert list(viterbi_biluo([x], 1)[0]) == [4, 0]


def tag_log_probs(rows):
    """Tag probabilities (O, then B I L U per label) -> log-probs."""
    return numpy.log(numpy.asarray(rows, dtype="f") + 1e-9)


def test_decode_finds_an_entity_whose_probability_is_split_between_labels():
    # O is the most probable tag (0.4), but the token is an entity with 0.6,
    # split over U-A (0.35) and U-B (0.25): the entity is kept, labelled A.
    x = tag_log_probs([[0.4, 0.0, 0.0, 0.0, 0.35, 0.0, 0.0, 0.0, 0.25], [1.0] + [0.0] * 8])
    assert list(viterbi_biluo([x], 2)[0]) == [0, 0]
    assert list(decode_biluo([x], 2)[0]) == [4, 0]


def test_decode_labels_each_span_by_its_tags_over_the_whole_span():
    # Span B L: label A wins the first token, label B the second, but B's
    # tags are better over the span (0.45 * 0.8 > 0.5 * 0.1).
    x = tag_log_probs([
        [0.0, 0.5, 0.0, 0.0, 0.0, 0.45, 0.0, 0.0, 0.05],
        [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.8, 0.1],
        [0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1],
    ])
    assert list(decode_biluo([x], 2)[0]) == [5, 7, 0]


def test_decode_never_uses_a_masked_label():
    x = tag_log_probs([[0.1, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.7]])
    x[:, 5:] = -numpy.inf  # label B masked
    assert list(decode_biluo([x], 2)[0]) == [4]
    x[:, 1:5] = -numpy.inf  # both masked: only O is left
    assert list(decode_biluo([x], 2)[0]) == [0]


def test_add_label_after_training_keeps_entities_then_learns_it(trained):
    nlp, optimizer = trained
    ner = nlp.get_pipe("ner")
    texts = [t for t, _ in TRAIN + NEW]
    before = ents(nlp, texts)
    assert ner.add_label("ORG") == 1 and ner.add_label("ORG") == 0
    assert ents(nlp, texts) == before
    assert ner.model.get_ref("output_layer").shims[0].module.output.out_features == 13
    train(nlp, examples(nlp, TRAIN + NEW), optimizer)
    assert ents(nlp, [NEW[0][0]])[0] == NEW[0][1]


def test_add_label_then_new_optimizer(trained):
    nlp, _ = trained
    nlp.get_pipe("ner").add_label("ORG")
    train(nlp, examples(nlp, TRAIN + NEW), Adam(0.01))
    assert ents(nlp, [NEW[1][0]])[0] == NEW[1][1]


def test_use_params_evaluates_with_averages(trained):
    nlp, optimizer = trained
    ner = nlp.get_pipe("ner")
    docs = [nlp.make_doc(t) for t, _ in TRAIN]
    raw = ner.model.predict(docs)
    with nlp.use_params(optimizer.averages):
        averaged = ner.model.predict(docs)
    assert not numpy.allclose(raw[0], averaged[0])
    assert all(numpy.array_equal(a, b) for a, b in zip(ner.model.predict(docs), raw))


def test_disk_and_bytes_round_trip_with_added_label(trained, tmp_path):
    nlp, optimizer = trained
    nlp.get_pipe("ner").add_label("ORG")
    train(nlp, examples(nlp, TRAIN + NEW), optimizer, steps=5)
    texts = [t for t, _ in TRAIN + NEW]
    docs = [nlp.make_doc(t) for t in texts]
    expected_scores = nlp.get_pipe("ner").model.predict(docs)
    expected = ents(nlp, texts)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("ner").labels == ("PER", "LOC", "ORG")
    assert ents(loaded, texts) == expected
    loaded_scores = loaded.get_pipe("ner").model.predict(docs)
    assert all(numpy.array_equal(a, b) for a, b in zip(expected_scores, loaded_scores))
    other = make_nlp().from_bytes(nlp.to_bytes())
    assert ents(other, texts) == expected


def test_odd_docs(trained):
    nlp, _ = trained
    for text in ["", "   ", "\n", "Alice", " ".join(["Paris"] * 10_000)]:
        doc = nlp(text)
        assert all(ent.label_ in ("PER", "LOC") for ent in doc.ents)
    long_doc = nlp(" ".join(["Paris"] * 10_000))
    assert len(long_doc) == 10_000
    docs = list(nlp.pipe(["", "Alice lives in Paris", " "]))
    assert [len(d.ents) for d in docs][1] == 2


def test_unknown_gold_label_is_added_and_learned_as_spacy_ner(trained):
    nlp, optimizer = trained
    egs = examples(nlp, TRAIN + NEW)
    losses = nlp.update(egs, sgd=optimizer)
    ner = nlp.get_pipe("ner")
    assert numpy.isfinite(losses["ner"])
    assert ner.labels == ("PER", "LOC", "ORG") and ner.cfg["masked_labels"] == []
    train(nlp, egs, optimizer, steps=30)
    assert (13, 19, "ORG") in ents(nlp, ["She works at Google"])[0]


def test_initialize_without_labels_tags_everything_outside_like_spacy_ner(tmp_path):
    """What `spacy assemble` does with no labels: spaCy's ner assembles."""
    nlp = make_nlp()
    nlp.initialize()
    ner = nlp.get_pipe("ner")
    assert ner.labels == () and nlp("Alice lives in Paris").ents == ()
    nlp.to_disk(tmp_path / "assembled")
    assert spacy.load(tmp_path / "assembled")("Alice in Paris").ents == ()
    ner.add_label("PER")
    assert nlp("Alice lives in Paris").ents == ()


def test_initialize_with_given_labels():
    nlp = make_nlp()
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    nlp.get_pipe("ner").initialize(lambda: egs, labels=["LOC", "ORG", "PER"])
    assert nlp.get_pipe("ner").labels == ("PER", "LOC", "ORG")


def test_outside_loss_weight_scales_the_gradient_of_gold_O_tokens(trained):
    nlp, _ = trained
    ner = nlp.get_pipe("ner")
    egs = examples(nlp, [("Alice lives in Paris", [(0, 5, "PER"), (15, 20, "LOC")])])
    scores = ner.model.predict([eg.predicted for eg in egs])
    ner.cfg["outside_loss_weight"] = 1.0
    _, full = ner.get_loss(egs, scores)
    ner.cfg["outside_loss_weight"] = 0.25
    _, weighted = ner.get_loss(egs, scores)
    outside = [1, 2]  # "lives", "in"
    numpy.testing.assert_allclose(weighted[0][outside], 0.25 * full[0][outside], rtol=1e-6)
    numpy.testing.assert_allclose(weighted[0][[0, 3]], full[0][[0, 3]], rtol=1e-6)


def test_outside_loss_weight_must_be_in_unit_interval():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=r"cfg\['outside_loss_weight'\] must be a number in \(0, 1\], got 0.0"):
        nlp.add_pipe("torch_ner", config={**CFG, "outside_loss_weight": 0.0})


# ------------------------------------------------ spaCy's ner contract
@pytest.fixture(scope="module")
def trained_once():
    """A trained pipeline for the tests that only read it."""
    nlp = make_nlp()
    egs = examples(nlp, TRAIN)
    nlp.initialize(lambda: egs)
    train(nlp, egs, Adam(0.01))
    return nlp


def test_preset_entities_and_their_kb_id_are_kept_and_filled_around(trained_once):
    nlp = trained_once
    doc = nlp.make_doc("Alice lives in Paris")
    doc.ents = [Span(doc, 0, 1, label="PRODUCT", kb_id="Q42")]
    doc = nlp.get_pipe("ner")(doc)
    assert [(e.text, e.label_, e.kb_id_) for e in doc.ents] == [("Alice", "PRODUCT", "Q42"), ("Paris", "LOC", "")]
    # Tokens no entity covers are "O", as after spaCy's ner.
    assert [t.ent_iob_ for t in doc] == ["B", "O", "O", "B"]
    # The same in a pipeline: an entity_ruler before torch_ner.
    ruled = spacy.blank("en")
    ruled.add_pipe("entity_ruler").add_patterns([{"label": "CITY", "pattern": "Paris", "id": "paris"}])
    ruled.add_pipe("ner", source=nlp)
    doc = ruled("Alice lives in Paris")
    assert [(e.text, e.label_, e.ent_id_) for e in doc.ents] == [("Alice", "PER", ""), ("Paris", "CITY", "paris")]


def test_blocked_tokens_stay_blocked(trained_once):
    nlp = trained_once
    doc = nlp.make_doc("Alice lives in Paris")
    doc.set_ents([], blocked=[doc[3:4]], default="unmodified")
    doc = nlp.get_pipe("ner")(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [("Alice", "PER")]
    assert (doc[3].ent_iob_, doc[3].ent_type_) == ("B", "")


def test_batches_and_single_docs_agree(trained_once):
    nlp = trained_once
    texts = [t for t, _ in TRAIN] + ["", "Paris"]
    batched = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=4)]
    single = [[(e.start, e.end, e.label_) for e in nlp(t).ents] for t in texts]
    assert batched == single


def test_untrained_labels_predict_nothing():
    """As spaCy's ner: initialized but not trained, no entities; a label is
    predicted once an update has seen it in the gold data."""
    nlp = make_nlp()
    egs = examples(nlp, TRAIN)
    nlp.get_pipe("ner").add_label("ORG")
    nlp.initialize(lambda: egs)
    ner = nlp.get_pipe("ner")
    assert ner.labels == ("ORG", "PER", "LOC")
    texts = [t for t, _ in TRAIN + NEW]
    assert all(e == [] for e in ents(nlp, texts))
    train(nlp, egs, Adam(0.01), steps=20)
    found = {label for doc_ents in ents(nlp, texts) for _, _, label in doc_ents}
    assert found == {"PER", "LOC"}  # ORG was never in the gold data
    assert ner.cfg["masked_labels"] == ["ORG"]


def test_negated_gold_label_is_spacys_error_E869():
    nlp = make_nlp()
    nlp.get_pipe("ner").add_label("PER")
    nlp.initialize()
    with pytest.raises(ValueError, match="E869"):
        nlp.update(examples(nlp, [("Alice lives", [(0, 5, "!PER")])]))
    with pytest.raises(ValueError, match="E869"):
        make_nlp().initialize(lambda: examples(nlp, [("Alice lives", [(0, 5, "!PER")])]))


def test_missing_lexeme_norms_log_W033_as_spacy_ner(caplog):
    nlp = make_nlp()
    nlp.vocab.lookups = Lookups()
    with caplog.at_level(logging.DEBUG):
        nlp.initialize()
    assert "W033" in caplog.text


def test_constructor_takes_spacys_defaults():
    nlp = make_nlp()
    model = nlp.get_pipe("ner").model
    ner = TorchEntityRecognizer(nlp.vocab, model)
    assert ner.name == "ner" and ner.scorer is not None and ner.cfg["incorrect_spans_key"] is None


@pytest.mark.parametrize("seed", [0, 1])
def test_negative_spans_unlearn_an_entity(seed):
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_ner", name="ner", config={**CFG, "incorrect_spans_key": "neg"})
    egs = examples(nlp, TRAIN)
    optimizer = nlp.initialize(lambda: egs)
    optimizer.learn_rate = 0.01
    train(nlp, egs, optimizer, steps=30)
    assert ("Paris", "LOC") in [(e.text, e.label_) for e in nlp("Paris is nice").ents]
    neg = Example(nlp.make_doc("Paris is nice"), nlp.make_doc("Paris is nice"))
    neg.reference.spans["neg"] = [Span(neg.reference, 0, 1, "LOC")]
    before = nlp.get_pipe("ner").update([neg])["ner"]
    assert before > 0.5  # -log(1 - p): the span is confidently predicted
    for _ in range(20):
        losses = nlp.update([neg], sgd=optimizer)
    assert losses["ner"] < before
    assert ("Paris", "LOC") not in [(e.text, e.label_) for e in nlp("Paris is nice").ents]
    # A negative span equal to a gold entity is spaCy's error E868.
    conflict = examples(nlp, [("Paris is nice", [(0, 5, "LOC")])])[0]
    conflict.reference.spans["neg"] = [Span(conflict.reference, 0, 1, "LOC")]
    with pytest.raises(ValueError, match="E868"):
        nlp.update([conflict])


def test_spans_key_stores_each_entity_with_its_probability(trained_once):
    nlp = trained_once
    ner = nlp.get_pipe("ner")
    ner.cfg["spans_key"] = "ner_scores"
    try:
        doc = nlp.make_doc("Alice lives in Paris")
        doc.ents = [Span(doc, 0, 1, label="PRODUCT")]
        doc = ner(doc)
    finally:
        ner.cfg["spans_key"] = None
    group = doc.spans["ner_scores"]
    assert [(s.text, s.label_) for s in group] == [("Paris", "LOC")]  # only what this component found
    scores = group.attrs["scores"]
    assert scores.shape == (1,) and 0.5 < scores[0] <= 1.0
    # Thresholding the scores selects entities.
    assert [s.text for s, p in zip(group, scores) if p > 0.5] == ["Paris"]


def test_entity_probabilities_are_the_exact_marginals():
    """Against brute force: every valid BILUO sequence of 3 tokens, 2 labels."""
    rng = numpy.random.default_rng(0)
    n_labels, n_tokens = 2, 3
    logits = rng.normal(size=(n_tokens, biluo.n_tags(n_labels))).astype("float32")
    log_probs = logits - numpy.log(numpy.exp(logits).sum(axis=1, keepdims=True))
    trans, start, end = biluo_constraints(n_labels)
    weights = {}
    for seq in itertools.product(range(biluo.n_tags(n_labels)), repeat=n_tokens):
        score = start[seq[0]] + end[seq[-1]] + sum(trans[a, b] for a, b in zip(seq, seq[1:]))
        if numpy.isfinite(score):
            weights[seq] = numpy.exp(sum(log_probs[t, tag] for t, tag in enumerate(seq)))
    total = sum(weights.values())
    tags = numpy.asarray([biluo.tag_column(1, biluo.B), biluo.tag_column(1, biluo.L), biluo.tag_column(0, biluo.U)])
    spans = biluo.entity_spans(tags)
    assert spans == [(0, 2, 1), (2, 3, 0)]
    expected = []
    for s, e, _ in spans:
        expected.append(sum(w for seq, w in weights.items() if seq[s:e] == tuple(tags[s:e])
                            and (s == 0 or seq[s - 1] == 0 or (seq[s - 1] - 1) % 4 + 1 in (biluo.L, biluo.U))
                            and (e == n_tokens or (seq[e] - 1) % 4 + 1 in (biluo.B, biluo.U) or seq[e] == 0)) / total)
    numpy.testing.assert_allclose(biluo.entity_probabilities(log_probs, tags, n_labels), expected, rtol=1e-4)


def _reference_negative_spans(log_probs, spans, n_labels):
    """The definition of the negative spans' loss, computed as it reads: per
    span, the sequences with the span fixed against all of them (two whole
    forward-backward passes), and -log(1 - p) through the log-softmax."""
    trans, start, end = biluo_constraints(n_labels)

    def forward_backward(x):
        alpha, beta = numpy.empty_like(x), numpy.empty_like(x)
        alpha[0] = start + x[0]
        for t in range(1, len(x)):
            alpha[t] = numpy.logaddexp.reduce(alpha[t - 1][:, None] + trans, axis=0) + x[t]
        beta[-1] = end
        for t in range(len(x) - 2, -1, -1):
            beta[t] = numpy.logaddexp.reduce(trans + (x[t + 1] + beta[t + 1])[None, :], axis=1)
        return alpha, beta, numpy.logaddexp.reduce(alpha[-1] + end)

    probs = numpy.exp(log_probs)
    loss, d = 0.0, numpy.zeros_like(log_probs)
    alpha, beta, log_z = forward_backward(log_probs)
    posteriors = numpy.exp(alpha + beta - log_z)
    for s, e, label in spans:
        fixed = numpy.full_like(log_probs, -numpy.inf)
        fixed[:s], fixed[e:] = log_probs[:s], log_probs[e:]
        cols = biluo.span_tag_columns(s, e, label)
        fixed[numpy.arange(s, e), cols] = log_probs[numpy.arange(s, e), cols]
        a, b, log_z_span = forward_backward(fixed)
        if not numpy.isfinite(log_z_span):
            continue
        p = numpy.exp(min(log_z_span - log_z, 0.0))
        grad = p / max(1.0 - p, 1e-12) * (numpy.exp(a + b - log_z_span) - posteriors)
        d += grad - probs * grad.sum(axis=1, keepdims=True)
        loss -= numpy.log(max(1.0 - p, 1e-12))
    return loss, d


def test_negative_spans_loss_and_gradient_are_the_definitions():
    """Batched over the spans, the same values as the definition computed
    span by span: spans at the doc's edges, overlapping, of one token, and
    of a masked label (probability 0: nothing)."""
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("torch_ner", config={**CFG, "incorrect_spans_key": "neg"})
    ner.initialize(lambda: iter([]), labels=["PER", "LOC", "ORG"])
    ner.cfg["masked_labels"] = ["ORG"]
    words = [f"w{i}" for i in range(25)]
    eg = Example(Doc(nlp.vocab, words=words), Doc(nlp.vocab, words=words))
    spans = [(0, 2, 0), (3, 4, 1), (3, 6, 0), (5, 9, 1), (20, 25, 0), (24, 25, 1), (10, 12, 2)]
    eg.reference.spans["neg"] = [Span(eg.reference, s, e, ner.labels[label]) for s, e, label in spans]
    logits = [numpy.random.default_rng(0).normal(scale=2.0, size=(25, biluo.n_tags(3))).astype("float32")]
    loss, d = ner.get_loss([eg], logits)
    ner.cfg["incorrect_spans_key"] = None
    plain_loss, plain_d = ner.get_loss([eg], logits)
    expected_loss, expected_d = _reference_negative_spans(ner._log_probs(logits[0], dtype="float64"), spans, 3)
    expected_d[:, biluo.tag_mask(ner.label_mask())] = 0.0
    assert expected_loss > 0.1
    numpy.testing.assert_allclose(loss - plain_loss, expected_loss, rtol=1e-6)
    numpy.testing.assert_allclose(d[0] - plain_d[0], expected_d, rtol=1e-4, atol=1e-6)


def test_negative_spans_cost_one_forward_backward_per_doc(monkeypatch):
    """However many negative spans a doc has, one forward-backward over it
    (bench/negative_spans.py times it)."""
    calls = []
    forward_backward = biluo._forward_backward
    monkeypatch.setattr(biluo, "_forward_backward", lambda *args: calls.append(1) or forward_backward(*args))
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("torch_ner", config={**CFG, "incorrect_spans_key": "neg"})
    eg = examples(nlp, [("Alice lives in Paris and Bob in Rome", [(0, 5, "PER")])])[0]
    nlp.initialize(lambda: [eg])
    eg.reference.spans["neg"] = [Span(eg.reference, i, i + 1, "PER") for i in range(2, 8)]
    nlp.update([eg])
    assert len(calls) == 1
