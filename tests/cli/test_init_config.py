"""`python -m spacy init torch-config`: for every preset file in configs/
(found by name: `<component>.cfg`, `<component>_accuracy.cfg`), the command
writes that file exactly, from the installed package, and what it writes
trains; pipelines of several components and `--gpu` build and train in
Python; a missing preset, a language spaCy does not have and an existing
output file are one-line errors; the wheel ships configs/ as
`spacy_pytorch_shim/configs/`."""
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spacy_pytorch_shim.cli import init_torch_config as init_config
from spacy_pytorch_shim.cli.init_torch_config import available_presets, languages, torch_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The efficiency and accuracy presets (the transformer presets need an
# encoder: tests/models/transformer/test_presets.py).
PRESETS = sorted((key, name) for key, name in available_presets().items() if key[1] in init_config.OPTIMIZE)
SAMPLE = {
    "torch_ner": "btc-sample",
    "torch_textcat": "banking77-sample",
    "torch_textcat_multilabel": "goemotions-sample",
}


def test_presets_are_the_files_named_by_the_convention():
    shipped = {p.name for p in (ROOT / "configs").glob("*.cfg")}
    assert {name for _, name in PRESETS} <= shipped
    for component in init_config.COMPONENTS:
        assert (component, "efficiency") in available_presets(), component
    # Every *_accuracy.cfg (and only those) is an accuracy preset; every
    # *_transformer.cfg a transformer preset (--encoder).
    accuracy = {name for (_, optimize), name in PRESETS if optimize == "accuracy"}
    assert accuracy == {n for n in shipped if n.endswith("_accuracy.cfg")}
    transformer = {name for (_, optimize), name in available_presets().items() if optimize == init_config.TRANSFORMER}
    assert transformer == {n for n in shipped if n.endswith("_transformer.cfg")} and len(transformer) == 3


@pytest.mark.parametrize("component,optimize", [key for key, _ in PRESETS], ids=[name for _, name in PRESETS])
def test_command_writes_the_shipped_preset_and_it_trains(cli, tiny_data, tmp_path, component, optimize):
    short = component[len("torch_"):]
    # From a directory outside the checkout: the configs come from the package.
    cli.run(["init", "torch-config", "config.cfg", "--pipeline", short, "--optimize", optimize], cwd=tmp_path)
    written = (tmp_path / "config.cfg").read_text(encoding="utf8")
    assert written == (ROOT / "configs" / init_config.preset_name(component, optimize)).read_text(encoding="utf8")
    data = tiny_data[SAMPLE[component]]
    cli.run(
        ["train", "config.cfg", "--output", "out", "--paths.train", data["train"], "--paths.dev", data["dev"],
         "--training.max_steps", "4", "--training.eval_frequency", "2"],
        cwd=tmp_path,
    )
    assert (tmp_path / "out" / "model-best" / "meta.json").exists()


def test_several_components_and_gpu_build_and_train():
    import spacy
    from spacy.training import Example
    from thinc.api import Config

    text, notes = torch_config(["ner", "textcat_multilabel"], gpu=True)
    config = Config().from_str(text)
    assert config["nlp"]["pipeline"] == ["torch_ner", "torch_textcat_multilabel"]
    assert config["system"]["gpu_allocator"] == "pytorch"
    weights = {k: v for k, v in config["training"]["score_weights"].items() if v}
    # spaCy's combine_score_weights: each preset's weights halved (and rounded).
    assert weights == {"ents_f": 0.5, "cats_macro_auc": 0.25, "cats_macro_f": 0.12, "cats_micro_f": 0.12}
    # The learn rates of the two presets differ: the note says which one is used.
    assert any(note.startswith("training.optimizer.learn_rate") for note in notes), notes
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    doc = nlp.make_doc("Alice lives in Paris")
    examples = [
        Example.from_dict(doc, {"entities": [(0, 5, "PER"), (15, 20, "LOC")], "cats": {"A": 1.0, "B": 1.0, "C": 0.0}})
    ] * 2
    optimizer = nlp.initialize(lambda: examples)
    losses = nlp.update(examples, sgd=optimizer)
    assert set(losses) == {"torch_ner", "torch_textcat_multilabel"}


@pytest.mark.parametrize("pipeline", [["ner"], ["textcat", "textcat_multilabel"]])
def test_distill_writes_a_student_config_reading_stored_targets(pipeline):
    from thinc.api import Config

    from spacy_pytorch_shim.teacher_targets import READER

    plain = Config().from_str(torch_config(pipeline)[0], interpolate=False)
    config = Config().from_str(torch_config(pipeline, distill=True)[0], interpolate=False)
    assert config["paths"]["targets"] is None
    reader = config["corpora"]["train"]
    assert reader["@readers"] == READER
    assert reader["path"] == plain["corpora"]["train"]["path"] and reader["targets_path"] == "${paths.targets}"
    assert (reader["max_length"], reader["limit"]) == (plain["corpora"]["train"]["max_length"], plain["corpora"]["train"]["limit"])
    # Everything else is the preset's.
    for section in ("components", "training", "nlp"):
        assert config[section] == plain[section], section
    assert config["corpora"]["dev"] == plain["corpora"]["dev"]


def test_missing_preset_and_unknown_component_are_clear_errors(cli, tmp_path, monkeypatch):
    only = tmp_path / "configs"
    only.mkdir()
    shutil.copy(ROOT / "configs" / "ner.cfg", only)
    monkeypatch.setattr(init_config, "preset_files", lambda: only)
    with pytest.raises(init_config.PresetError, match=r"No 'accuracy' preset for torch_ner: configs/ner_accuracy.cfg .*Presets shipped: torch_ner \(efficiency: ner.cfg\)$"):
        torch_config(["ner"], optimize="accuracy")
    with pytest.raises(init_config.PresetError, match="configs/textcat.cfg"):
        torch_config(["textcat"])
    monkeypatch.undo()
    result = cli.run(["init", "torch-config", "-", "--pipeline", "ner,parser"], cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "Unknown component 'parser' in --pipeline: choose from ner, textcat, textcat_multilabel" in " ".join(result.stdout.split())
    result = cli.run(["init", "torch-config", "-", "--optimize", "fast"], cwd=tmp_path, check=False)
    assert result.returncode == 1 and "--optimize must be one of efficiency, accuracy" in " ".join(result.stdout.split())


def assert_one_line_error(result, message):
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1 and "Traceback" not in output, output
    assert [line for line in output.splitlines() if message in line], output


def test_unknown_language_is_refused(cli, tmp_path):
    result = cli.run(["init", "torch-config", "config.cfg", "--lang", "zz"], cwd=tmp_path, check=False)
    assert_one_line_error(result, "--lang 'zz': not a language of spaCy; choose from af, ")
    assert not (tmp_path / "config.cfg").exists()
    assert {"en", "de", "xx"} <= set(languages())
    assert "lang = \"de\"" in torch_config(["ner"], lang="de")[0]


def test_existing_file_is_overwritten_with_force_only(cli, tmp_path):
    (tmp_path / "config.cfg").write_text("mine")
    result = cli.run(["init", "torch-config", "config.cfg"], cwd=tmp_path, check=False)
    assert_one_line_error(result, "config.cfg: exists; to overwrite it, add --force (-F)")
    assert (tmp_path / "config.cfg").read_text() == "mine"
    result = cli.run(["init", "torch-config", "config.cfg", "--force"], cwd=tmp_path)
    assert "overwrote it" in result.stdout
    assert (tmp_path / "config.cfg").read_text() == (ROOT / "configs" / "ner.cfg").read_text()


def test_shipped_refuses_the_options_it_ignores(cli, tmp_path):
    result = cli.run(["init", "torch-config", "-", "--shipped", "ner_spacy_tok2vec", "--lang", "de"], cwd=tmp_path, check=False)
    assert_one_line_error(result, "--shipped ner_spacy_tok2vec writes the shipped file as it is: --lang cannot change it")


def test_setup_cfg_lists_every_package():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "spacy_pytorch_shim").rglob("__init__.py")
    }
    assert listed == found | {"spacy_pytorch_shim.configs"}


def test_wheel_ships_the_configs(cli, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "training", "build", "dist", "*.egg-info", "__pycache__", "bench", "tests"))
    cli.run_cmd(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp_path / "dist", src],
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("spacy_pytorch_shim-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {Path(n).name: zf.read(n) for n in zf.namelist() if n.startswith("spacy_pytorch_shim/configs/") and n.endswith(".cfg")}
    assert shipped == {p.name: p.read_bytes() for p in (ROOT / "configs").glob("*.cfg")}
