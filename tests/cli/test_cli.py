"""End to end through the real spaCy CLI, in subprocesses: every ready
config in configs/ trains (`spacy train`, 10 steps on tiny DocBins cut from
data/*-sample), evaluates (`spacy evaluate`), passes `spacy debug config` and
`spacy init fill-config`; `spacy benchmark speed` runs on a trained pipeline;
`nlp.pipe(n_process=2)` matches `n_process=1`; and the checkpoints that
`spacy train` writes hold the optimizer's parameter averages (EMA)."""
import json
import re
import sys
from pathlib import Path

import numpy
import pytest

CONFIG_NAMES = [
    "ner",
    "ner_accuracy",
    "textcat",
    "textcat_accuracy",
    "textcat_multilabel",
    "textcat_multilabel_accuracy",
    "ner_spacy_tok2vec",
    "torch_tok2vec_spacy_ner",
]

pytestmark = pytest.mark.slow


def test_every_ready_config_is_covered(cli):
    # The transformer presets need an encoder: tests/models/transformer/ covers them.
    shipped = sorted(p.stem for p in cli.CONFIGS.glob("*.cfg") if not p.stem.endswith("_transformer"))
    assert shipped == sorted(CONFIG_NAMES) == sorted(cli.CONFIG_DATA)


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_train_then_evaluate(cli, trained, config):
    output = cli.trained_pipeline(trained, config)
    for name in ("model-best", "model-last"):
        assert (output / name / "meta.json").exists(), f"spacy train wrote no {name}"
        assert (output / name / "config.cfg").exists()
    meta = cli.read_json(output / "model-best" / "meta.json")
    score_keys = cli.CONFIG_DATA[config][1]
    assert score_keys[0] in meta["performance"]

    _, _, evaluate, scores_path = trained[config]
    result = cli.check_ok(evaluate, f"spacy evaluate for configs/{config}.cfg")
    assert "Results" in result.stdout
    scores = cli.read_json(scores_path)
    for key in score_keys:
        assert key in scores, f"{key} missing from spacy evaluate output: {sorted(scores)}"
        if not key.endswith("per_type"):
            assert scores[key] is not None and 0.0 <= scores[key] <= 1.0, (key, scores[key])
    assert scores["speed"] > 0


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_debug_config(cli, config_checks, config):
    result = cli.check_ok(config_checks[("debug", config)], f"spacy debug config configs/{config}.cfg")
    assert "Config is valid" in result.stdout, result.stdout


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_init_fill_config_changes_nothing(cli, config_checks, config):
    """The ready configs are complete: filling in spaCy's defaults adds or
    changes no setting."""
    from thinc.api import Config

    result = cli.check_ok(config_checks[("fill", config)], f"spacy init fill-config configs/{config}.cfg")
    filled_path = Path(result.args[-1])
    original = Config().from_disk(cli.CONFIGS / f"{config}.cfg", interpolate=False)
    filled = Config().from_disk(filled_path, interpolate=False)
    assert filled == original


def test_benchmark_speed(cli, trained, tiny_data):
    output = cli.trained_pipeline(trained, "ner")
    result = cli.run(
        ["benchmark", "speed", output / "model-best", tiny_data["btc-sample"]["test"],
         "--batches", "30", "--warmup", "1", "--batch-size", "4"]
    )
    match = re.search(r"Mean: ([0-9.]+) words/s", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) > 0


# --------------------------------------------------------------- n_process=2
PIPE_SCRIPT = r"""
import json, sys
import spacy
import torch
from spacy.language import Language

model, texts_path = sys.argv[1], sys.argv[2]
texts = json.loads(open(texts_path, encoding="utf8").read())
nlp = spacy.load(model)


@Language.component("probe_ner_logits")
def probe_ner_logits(doc):
    # The torch_ner model's raw scores (summed over the tokens, one per tag),
    # so that the comparison means something even when a briefly trained
    # model predicts no entities. Defined in __main__: works with fork.
    if len(doc):
        logits = nlp.get_pipe("torch_ner").model.predict([doc])[0]
        doc.user_data["logits"] = [float(v) for v in logits.sum(axis=0)]
    return doc


if "torch_ner" in nlp.pipe_names:
    nlp.add_pipe("probe_ner_logits", after="torch_ner")


def annotations(docs):
    return [
        {"ents": [[e.start_char, e.end_char, e.label_] for e in doc.ents], "cats": doc.cats,
         "logits": doc.user_data.get("logits")}
        for doc in docs
    ]

# n_process=1 first, so the parent has run torch's thread pool before the
# workers are forked (the case the fork guard exists for).
one = annotations(nlp.pipe(texts, batch_size=8))
two = annotations(nlp.pipe(texts, batch_size=8, n_process=2))
print(json.dumps({"one": one, "two": two, "threads": torch.get_num_threads()}))
"""
PIPE_TIMEOUT = 120  # seconds; a healthy run takes about 10


@pytest.mark.parametrize("config,sample", [("ner", "btc-sample"), ("textcat", "banking77-sample")])
def test_pipe_n_process_2_matches_n_process_1(cli, trained, tmp_path, config, sample):
    import spacy
    from spacy.tokens import DocBin

    output = cli.trained_pipeline(trained, config)
    nlp = spacy.blank("en")
    texts = [doc.text for doc in DocBin().from_disk(cli.DATA / sample / "test.spacy").get_docs(nlp.vocab)][:60]
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts), encoding="utf8")
    script = tmp_path / "pipe.py"
    script.write_text(PIPE_SCRIPT, encoding="utf8")
    # Two torch threads in the parent: a hang in the forked workers fails the
    # test through the timeout.
    result = cli.run_cmd(
        [sys.executable, script, output / "model-best", texts_path],
        timeout=PIPE_TIMEOUT, threads=2,
    )
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["threads"] == 2
    one, two = got["one"], got["two"]
    assert len(one) == len(two) == len(texts)
    for a, b in zip(one, two):
        assert a["ents"] == b["ents"]
        assert a["cats"].keys() == b["cats"].keys()
        for label, score in a["cats"].items():
            assert b["cats"][label] == pytest.approx(score, abs=1e-5)
        if config == "ner":
            assert a["logits"] and b["logits"] == pytest.approx(a["logits"], rel=1e-4, abs=1e-3)
    if config == "textcat":
        # 77 intents, scores that sum to one: the comparison above is not vacuous.
        assert all(len(a["cats"]) == 77 for a in one)
        assert all(sum(a["cats"].values()) == pytest.approx(1.0, abs=1e-4) for a in one)


# ----------------------------------------------------------------------- EMA
EMA_PROBE = r'''
"""Loaded with `spacy train --code`: keeps the optimizer, and at every
checkpoint (inside spaCy's `nlp.use_params(optimizer.averages)`) saves the
optimizer's averages and the parameters the torch modules hold; at exit,
saves the parameters the modules hold after training (the raw ones)."""
import atexit
from pathlib import Path

import numpy
import spacy
from thinc.api import Adam

from spacy_pytorch_shim.models.torch_shim import TorchShim

STATE = {}


def torch_params(nlp):
    """{'pipe/node/shim/param': tensor} for every torch parameter."""
    params = {}
    for pipe_name, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if model in (None, True, False):
            continue
        for i, node in enumerate(model.walk()):
            for j, shim in enumerate(node.shims):
                if isinstance(shim, TorchShim):
                    for name, param in shim.module.named_parameters():
                        params[f"{pipe_name}/{i}/{j}/{name}"] = (shim, name, param)
    return params


@spacy.registry.optimizers("ema_probe.Adam.v1")
def probe_adam(learn_rate=0.001, L2=1e-6, beta1=0.9, beta2=0.999, eps=1e-8,
               grad_clip=1.0, L2_is_weight_decay=True, use_averages=True):
    optimizer = Adam(learn_rate, L2=L2, beta1=beta1, beta2=beta2, eps=eps,
                     grad_clip=grad_clip, L2_is_weight_decay=L2_is_weight_decay,
                     use_averages=use_averages)
    STATE["optimizer"] = optimizer
    return optimizer


@spacy.registry.callbacks("ema_probe.snapshot.v1")
def make_snapshot(path: str):
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)

    def dump_raw():
        if "nlp" in STATE:
            arrays = {key: p.detach().cpu().numpy() for key, (_, _, p) in torch_params(STATE["nlp"]).items()}
            numpy.savez(out / "raw.npz", **arrays)

    atexit.register(dump_raw)

    def before_to_disk(nlp):
        averages = STATE["optimizer"].averages or {}
        n = STATE.get("saves", 0)
        arrays = {}
        for key, (shim, name, param) in torch_params(nlp).items():
            held = param.detach().cpu().numpy()
            arrays["held|" + key] = held
            avg = averages.get((shim.id, name))
            if avg is not None:
                arrays["avg|" + key] = numpy.asarray(avg).reshape(held.shape)
        numpy.savez(out / f"save{n}.npz", **arrays)
        STATE["saves"] = n + 1
        STATE["nlp"] = nlp
        return nlp

    return before_to_disk
'''


def _loaded_torch_params(path: Path):
    import spacy
    from spacy_pytorch_shim.models.torch_shim import TorchShim

    nlp = spacy.load(path)
    params = {}
    for pipe_name, proc in nlp.pipeline:
        for i, node in enumerate(proc.model.walk()):
            for j, shim in enumerate(node.shims):
                if isinstance(shim, TorchShim):
                    for name, param in shim.module.named_parameters():
                        params[f"{pipe_name}/{i}/{j}/{name}"] = param.detach().cpu().numpy()
    return params


def test_checkpoints_hold_the_parameter_averages(cli, tiny_data, tmp_path):
    """`spacy train` with use_averages = true saves model-last and model-best
    inside `nlp.use_params(optimizer.averages)`. The saved torch weights must
    be the optimizer's averages (so TorchShim.use_params swapped them in under
    the keys the optimizer used), and differ from the raw weights the modules
    hold after training (so the check can tell the two apart)."""
    from thinc.api import Config

    config = Config().from_disk(cli.CONFIGS / "ner.cfg", interpolate=False)
    assert config["training"]["optimizer"]["use_averages"] is True
    optimizer = dict(config["training"]["optimizer"])
    assert optimizer.pop("@optimizers") == "Adam.v1"
    config["training"]["optimizer"] = {"@optimizers": "ema_probe.Adam.v1", **optimizer}
    probe_dir = tmp_path / "probe"
    config["training"]["before_to_disk"] = {"@callbacks": "ema_probe.snapshot.v1", "path": str(probe_dir)}
    config_path = tmp_path / "ner_probe.cfg"
    config.to_disk(config_path)
    code = tmp_path / "ema_probe.py"
    code.write_text(EMA_PROBE, encoding="utf8")
    output = tmp_path / "out"
    cli.run(cli.train_args(config_path, tiny_data["btc-sample"], output, ["--code", code]))

    saves = sorted(probe_dir.glob("save*.npz"), key=lambda p: int(p.stem[4:]))
    assert len(saves) >= 2, "spacy train saved fewer checkpoints than expected"
    snapshots = [dict(numpy.load(p)) for p in saves]
    raw = dict(numpy.load(probe_dir / "raw.npz"))
    keys = sorted(raw)
    assert keys and all(k.startswith("torch_ner/") for k in keys)
    for snap in snapshots:
        missing = [k for k in keys if "avg|" + k not in snap]
        assert not missing, f"the optimizer holds no averages for {missing}"
        for k in keys:
            # Inside use_params the modules hold exactly the averages.
            numpy.testing.assert_array_equal(snap["held|" + k], snap["avg|" + k], err_msg=k)

    last = snapshots[-1]
    # The averages really differ from the raw weights after 10 updates.
    assert max(float(numpy.abs(last["avg|" + k] - raw[k]).max()) for k in keys) > 1e-4

    on_disk_last = _loaded_torch_params(output / "model-last")
    assert sorted(on_disk_last) == keys
    for k in keys:
        numpy.testing.assert_array_equal(on_disk_last[k], last["avg|" + k], err_msg=k)

    on_disk_best = _loaded_torch_params(output / "model-best")
    matches = [
        i for i, snap in enumerate(snapshots)
        if all(numpy.array_equal(on_disk_best[k], snap["avg|" + k]) for k in keys)
    ]
    assert matches, "model-best holds none of the averaged checkpoints"
    assert not all(numpy.array_equal(on_disk_best[k], raw[k]) for k in keys)


FROZEN_SECTION = """[components.torch_ner.model]
@architectures = "spacy-pytorch-shim.ParamGroups.v1"
frozen = ["torch_tok2vec_encoder.embed.*", "torch_tok2vec_encoder.encoder.convs.0.*"]
learn_rate_multipliers = {"torch_tok2vec_encoder.*": 0.1}

"""


def _with_param_groups(ner_cfg: str, section: str) -> str:
    """configs/ner.cfg with its model moved under a ParamGroups block."""
    text = ner_cfg.replace("[components.torch_ner.model", "[components.torch_ner.model.model")
    text = text.replace("${components.torch_ner.model.", "${components.torch_ner.model.model.")
    return text.replace("[components.torch_ner.model.model]", section + "[components.torch_ner.model.model]", 1)


def test_spacy_train_keeps_frozen_parameters_bit_for_bit(cli, tiny_data, tmp_path):
    """Frozen parameters in a config: after `spacy train` (averages on), the
    frozen ones in model-best and model-last are exactly as initialized, the
    others changed; a pattern that matches nothing stops `spacy train` with
    an error naming it."""
    import spacy
    from spacy.training.initialize import init_nlp
    from thinc.api import Config

    from spacy_pytorch_shim.models.param_groups import named_torch_parameters

    config_path = tmp_path / "frozen.cfg"
    config_path.write_text(_with_param_groups((cli.CONFIGS / "ner.cfg").read_text(), FROZEN_SECTION))
    data = tiny_data["btc-sample"]
    output = tmp_path / "out"
    cli.run(cli.train_args(config_path, data, output))

    config = Config().from_disk(config_path, overrides={"paths.train": str(data["train"]), "paths.dev": str(data["dev"])})
    initial = {
        name: param.detach().clone().numpy()
        for name, (_, _, param) in named_torch_parameters(init_nlp(config).get_pipe("torch_ner").model).items()
    }
    frozen = [n for n in initial if n.startswith(("torch_tok2vec_encoder.embed.", "torch_tok2vec_encoder.encoder.convs.0."))]
    assert len(frozen) == 3  # embed.weight, convs.0.weight, convs.0.bias
    for checkpoint in ("model-best", "model-last"):
        model = spacy.load(output / checkpoint).get_pipe("torch_ner").model
        trained = {name: p.detach().numpy() for name, (_, _, p) in named_torch_parameters(model).items()}
        assert trained.keys() == initial.keys()
        for name in frozen:
            numpy.testing.assert_array_equal(trained[name], initial[name], err_msg=f"{checkpoint}: {name}")
        changed = [n for n in initial if n not in frozen and not numpy.array_equal(trained[n], initial[n])]
        assert set(changed) == set(initial) - set(frozen), checkpoint

    bad_path = tmp_path / "bad.cfg"
    bad_path.write_text(_with_param_groups((cli.CONFIGS / "ner.cfg").read_text(), FROZEN_SECTION.replace("encoder.convs.0.*", "encoder.conv.0.*")))
    result = cli.run(cli.train_args(bad_path, data, tmp_path / "bad"), check=False)
    assert result.returncode != 0
    assert "frozen: the pattern 'torch_tok2vec_encoder.encoder.conv.0.*' matches no parameter" in result.stdout + result.stderr
