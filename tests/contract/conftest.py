"""Run spaCy's and Thinc's own test modules against our components and
wrapper: the test functions are imported from the installed `spacy.tests` /
`thinc.tests` packages (nothing is copied) and every pipeline they build gets
our factory in place of spaCy's (see `swap_factories`)."""
import types
from typing import Dict, Optional, Tuple

import pytest
import torch
from spacy.language import Language
from spacy.util import get_lang_class

from spacy_pytorch_shim.pipeline import SPACY_FACTORIES, TorchEntityRecognizer

# spaCy's factory -> ours. The pipe keeps spaCy's default name ("ner",
# "textcat"), so `losses["ner"]` and `nlp.get_pipe("ner")` work as written.
FACTORIES = {**{spacy: ours for ours, spacy in SPACY_FACTORIES.items()}, "beam_ner": "torch_ner"}
# Settings of spaCy's transition-based parser that have no counterpart in a
# tagger decoded exactly (no beam, no oracle): dropped.
TRANSITION_SETTINGS = ("beam_width", "beam_density", "beam_update_prob", "update_with_oracle_cut_size")


@pytest.fixture(scope="session")
def en_vocab():
    """spaCy's fixture of that name (its conftest needs hypothesis to import)."""
    return get_lang_class("en")().vocab


@pytest.fixture(scope="session")
def de_vocab():
    """spaCy's fixture of that name."""
    return get_lang_class("de")().vocab


def pytest_configure(config):
    config.addinivalue_line("markers", "issue(number): the spaCy issue a test comes from")


# Our default architectures, narrower (the suite's run time): what a test
# gets where it names spaCy's architecture or none. The sizes are no part of
# the contract (width 32 left spaCy's multi-label overfitting test at loss
# 0.011 for its < 0.01; 64 gives 0.001).
SMALL_TOK2VEC = {"width": 64, "rows": [500, 100, 100, 100], "encoder": {"width": 64, "depth": 2}}
# The text classifiers' default models are bags without a tok2vec: the
# tests of spaCy's textcat (trained to near-zero loss) get one.
SMALL_TEXTCAT_TOK2VEC = {
    "@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1",
    **SMALL_TOK2VEC,
    "encoder": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", **SMALL_TOK2VEC["encoder"]},
}
SMALL_MODELS = {
    "torch_ner": {"tok2vec": SMALL_TOK2VEC, "hidden_width": 64},
    "torch_textcat": {"tok2vec": SMALL_TEXTCAT_TOK2VEC, "hidden_width": 64, "ngram_rows": 4096},
    "torch_textcat_multilabel": {"tok2vec": SMALL_TEXTCAT_TOK2VEC, "hidden_width": 64, "ngram_rows": 4096},
}


def entity_recognizer(vocab, model, **cfg):
    """`EntityRecognizer(vocab, model, **cfg)` as spaCy's tests call it: ours,
    without the transition-based parser's settings."""
    return TorchEntityRecognizer(vocab, model, **{k: v for k, v in cfg.items() if k not in TRANSITION_SETTINGS})


def swapped_config(factory_name: str, config: Optional[Dict]) -> Dict:
    """spaCy's component config for our factory: spaCy's own architectures
    (`spacy.*`) are replaced by our default one, which the factory swap means
    (a torch component takes one of our torch architectures)."""
    config = dict(config or {})
    model = config.get("model")
    if model is None or (isinstance(model, dict) and str(model.get("@architectures", "")).startswith("spacy.")):
        config["model"] = SMALL_MODELS[FACTORIES[factory_name]]
    for key in TRANSITION_SETTINGS:
        config.pop(key, None)
    return config


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests' models are tiny: torch's thread pool only costs (10x on a
    busy 2-core machine, for spaCy's overfitting tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def swap_factories(monkeypatch):
    """Language.add_pipe/create_pipe build our component wherever spaCy's test
    asks for spaCy's."""
    for method in ("add_pipe", "create_pipe"):
        monkeypatch.setattr(Language, method, _swapping(getattr(Language, method)))


def _swapping(method):
    def swapped(self, factory_name, name=None, *args, config=None, source=None, **kwargs):
        if isinstance(factory_name, str) and factory_name in FACTORIES and source is None:
            name = name or factory_name
            config = swapped_config(factory_name, config)
            factory_name = FACTORIES[factory_name]
        if source is not None:
            kwargs["source"] = source
        return method(self, factory_name, name, *args, config=config or {}, **kwargs)

    return swapped


def adapt(
    module: types.ModuleType,
    replace: Dict[str, object],
    skips: Dict[str, str],
    parameters: Optional[Dict[str, Tuple[str, list]]] = None,
) -> Dict[str, object]:
    """The public names of `module` (tests, fixtures, data) for a test file's
    globals: the module's own globals in `replace` are swapped for ours (the
    tests read them from their module), each test in `skips` is marked to
    skip with its reason, and each test in `parameters` gets other values for
    one of its `parametrize` argument lists (spaCy's classes there were read
    when the module was imported)."""
    for name, value in replace.items():
        if not hasattr(module, name):
            raise AttributeError(f"{module.__name__} has no {name}: the adapter is out of date")
        setattr(module, name, value)
    names = {k: v for k, v in vars(module).items() if not k.startswith("_")}
    for test_name in list(skips) + list(parameters or {}):
        if test_name not in names:
            raise AttributeError(f"{module.__name__} has no {test_name}: the adapter is out of date")
    for test_name, (argnames, values) in (parameters or {}).items():
        names[test_name] = _reparametrized(names[test_name], argnames, values)
    for test_name, reason in skips.items():
        names[test_name] = pytest.mark.skip(reason=reason)(names[test_name])
    return names


def _reparametrized(test: types.FunctionType, argnames: str, values: list) -> types.FunctionType:
    """A copy of `test` whose `parametrize(argnames, ...)` mark has `values`."""
    marks = getattr(test, "pytestmark", [])
    if not any(m.name == "parametrize" and m.args[0] == argnames for m in marks):
        raise AttributeError(f"{test.__name__} is not parametrized over {argnames!r}: the adapter is out of date")
    copy = types.FunctionType(test.__code__, test.__globals__, test.__name__, test.__defaults__, test.__closure__)
    copy.__dict__.update(test.__dict__)
    copy.pytestmark = [
        pytest.mark.parametrize(argnames, values).mark if m.name == "parametrize" and m.args[0] == argnames else m
        for m in marks
    ]
    return copy
