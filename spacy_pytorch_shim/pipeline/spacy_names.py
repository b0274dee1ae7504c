"""Our components under the factory names of the spaCy components they stand
in for, for spaCy's tools that find components by factory name."""
import contextlib
import dataclasses
from typing import Iterator

from spacy.language import Language

# Our factory -> the spaCy factory it stands in for.
SPACY_FACTORIES = {
    "torch_ner": "ner",
    "torch_textcat": "textcat",
    "torch_textcat_multilabel": "textcat_multilabel",
}


@contextlib.contextmanager
def as_spacy_factories() -> Iterator[None]:
    """Within the block, `nlp.get_pipe_meta(name).factory` is spaCy's name for
    our components (`torch_ner` is `ner`, ...): `spacy debug data` selects
    its NER and text-classification checks by factory name, and runs them
    for ours inside it (docs/spacy-contract.md)."""
    get_pipe_meta = Language.get_pipe_meta

    def renamed(nlp: Language, name: str):
        meta = get_pipe_meta(nlp, name)
        if meta.factory in SPACY_FACTORIES:
            meta = dataclasses.replace(meta, factory=SPACY_FACTORIES[meta.factory])
        return meta

    Language.get_pipe_meta = renamed
    try:
        yield
    finally:
        Language.get_pipe_meta = get_pipe_meta
