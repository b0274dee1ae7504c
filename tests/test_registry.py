"""Every registered name resolves through spaCy's registry from entry points:
a fresh interpreter that imports nothing but spaCy."""
import json
import subprocess
import sys

from spacy_pytorch_shim.util import ARCHITECTURES, CALLBACKS, FACTORIES, READERS

SCRIPT = r"""
import json, sys
import spacy
assert "spacy_pytorch_shim" not in sys.modules
names = json.loads(sys.argv[1])
found = {}
for name in names["architectures"]:
    found[name] = spacy.registry.architectures.get(name).__module__
for name in names["callbacks"]:
    found[name] = spacy.registry.callbacks.get(name).__module__
for name in names["readers"]:
    found[name] = spacy.registry.readers.get(name).__module__
# Build every factory with its default config.
nlp = spacy.blank("en")
for name in names["factories"]:
    found[name] = type(nlp.add_pipe(name)).__module__
print(json.dumps({"found": found, "pipeline": nlp.pipe_names}))
"""


def test_every_name_resolves_after_only_import_spacy():
    names = json.dumps({"architectures": ARCHITECTURES, "callbacks": CALLBACKS, "readers": READERS, "factories": FACTORIES})
    result = subprocess.run([sys.executable, "-c", SCRIPT, names], capture_output=True, text=True, check=True)
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(output["found"]) == set(ARCHITECTURES) | set(CALLBACKS) | set(READERS) | set(FACTORIES)
    assert all(module.startswith("spacy_pytorch_shim") for module in output["found"].values())
    assert output["pipeline"] == FACTORIES


def test_setup_cfg_declares_exactly_the_listed_names():
    from configparser import ConfigParser
    from pathlib import Path

    cfg = ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    entry_points = cfg["options.entry_points"]
    declared = lambda group: {line.split("=")[0].strip() for line in entry_points[group].strip().splitlines()}
    assert declared("spacy_architectures") == set(ARCHITECTURES)
    assert declared("spacy_factories") == set(FACTORIES)
    assert declared("spacy_callbacks") == set(CALLBACKS)
    assert declared("spacy_readers") == set(READERS)
