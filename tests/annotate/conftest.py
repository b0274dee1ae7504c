"""Fixtures for the Ray tests: one local Ray instance for the session
(`ray.init(num_cpus=2)`, stopped at the end), tiny NER and textcat pipelines
built from the shipped configs (initialized on the samples and updated
once, so that torch_ner's labels are unmasked: the weights are near-random
but fixed, which is all that comparing with `nlp.pipe` needs), small corpora in every input format, and the reference
annotations of one-process `nlp.pipe`."""
from pathlib import Path
from typing import Dict, List

import pytest
import ray  # the dev setup installs the ray extra: these tests run for real
import spacy
from spacy.cli._util import import_code
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from thinc.api import Config

from ray_helpers import COMPONENTS, ROOT

SAMPLES = {"ner": "btc-sample", "textcat": "banking77-sample"}
N_DOCS = 120



@pytest.fixture(scope="session")
def ray_address():
    """A local Ray instance for the whole session; its GCS address lets CLI
    subprocesses join it with --address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", object_store_memory=300 * 2**20)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def sample_docs(name: str, split: str, vocab) -> List[Doc]:
    return list(DocBin().from_disk(ROOT / "data" / SAMPLES[name] / f"{split}.spacy").get_docs(vocab))


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory) -> Dict[str, Path]:
    """{"ner": dir, "textcat": dir}: configs/ner.cfg and configs/textcat.cfg
    initialized on 100 training docs of their sample and updated 10 times on
    them. The tests compare Ray's annotations with one process's exactly,
    though batches differ (so scores differ by ~1e-6, as with any GEMM): a
    model updated once scores many tags almost alike (one run under heavy
    load saw an entity differ, most likely such a near tie)."""
    out = tmp_path_factory.mktemp("pipelines")
    paths = {}
    for name in SAMPLES:
        nlp = spacy.util.load_model_from_config(Config().from_disk(ROOT / "configs" / f"{name}.cfg"), auto_fill=True)
        examples = [Example(nlp.make_doc(d.text), d) for d in sample_docs(name, "train", nlp.vocab)[:100]]
        optimizer = nlp.initialize(lambda: examples)
        for _ in range(10):
            nlp.update(examples, sgd=optimizer)
        nlp.to_disk(out / name)
        paths[name] = out / name
    return paths


@pytest.fixture(scope="session")
def texts() -> Dict[str, List[str]]:
    """N_DOCS test texts of each sample."""
    vocab = spacy.blank("en").vocab
    return {name: [d.text for d in sample_docs(name, "test", vocab)][:N_DOCS] for name in SAMPLES}


@pytest.fixture(scope="session")
def reference(pipelines, texts) -> Dict[str, List[Doc]]:
    """One-process `nlp.pipe` over the same texts."""
    return {name: list(spacy.load(pipelines[name]).pipe(texts[name])) for name in SAMPLES}


@pytest.fixture(scope="session")
def components():
    """The misbehaving test components, registered in this process too."""
    import_code(COMPONENTS)
    return COMPONENTS
