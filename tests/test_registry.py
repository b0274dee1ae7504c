"""Every registered name resolves through spaCy's registry from entry points:
a fresh interpreter that imports nothing but spaCy. setup.cfg's entry points
are the one list of the names this package registers."""
import json
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path
from typing import Dict, List

SCRIPT = r"""
import json, sys
import spacy
assert "spacy_pytorch_shim" not in sys.modules
names = json.loads(sys.argv[1])
found = {}
for group in ("architectures", "callbacks", "readers"):
    table = getattr(spacy.registry, group)
    for name in names[group]:
        found[name] = table.get(name).__module__
# Build every factory with its default config.
nlp = spacy.blank("en")
for name in names["factories"]:
    found[name] = type(nlp.add_pipe(name)).__module__
print(json.dumps({"found": found, "pipeline": nlp.pipe_names}))
"""
GROUPS = {
    "architectures": "spacy_architectures",
    "factories": "spacy_factories",
    "callbacks": "spacy_callbacks",
    "readers": "spacy_readers",
}


def entry_points() -> Dict[str, Dict[str, str]]:
    """setup.cfg's entry points by group: name -> "module:function"."""
    cfg = ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    section = cfg["options.entry_points"]
    groups = {}
    for group in section:
        lines = [line.split("=", 1) for line in section[group].strip().splitlines()]
        groups[group] = {name.strip(): target.strip() for name, target in lines}
    return groups


def declared(kind: str) -> List[str]:
    return list(entry_points()[GROUPS[kind]])


def test_every_name_resolves_after_only_import_spacy():
    names = {kind: declared(kind) for kind in GROUPS}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(names)], capture_output=True, text=True, check=True)
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(output["found"]) == {name for group in names.values() for name in group}
    assert all(module.startswith("spacy_pytorch_shim") for module in output["found"].values())
    assert output["pipeline"] == names["factories"]


def test_each_entry_point_names_the_function_the_registry_returns():
    """The function itself, not an alias kept in a second list."""
    import importlib

    import spacy

    for kind in ("architectures", "callbacks", "readers"):
        table = getattr(spacy.registry, kind)
        for name, target in entry_points()[GROUPS[kind]].items():
            module, function = target.split(":")
            assert table.get(name) is getattr(importlib.import_module(module), function), name


def test_every_cli_entry_point_is_a_module_of_the_cli_package():
    for name, target in entry_points()["spacy_cli"].items():
        assert target.startswith("spacy_pytorch_shim.cli."), (name, target)
