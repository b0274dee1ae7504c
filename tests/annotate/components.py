"""Components that misbehave on purpose, imported with `--code`/`code_path`
by the tests' workers: one kills its own worker process, one raises, one is
slow enough that a run can be stopped part-way."""
import os
import signal
import time
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc


class KillOnce:
    """SIGKILLs its process at document `index`, once: the marker file holds
    the killed pid (and stops the restarted worker from doing it again)."""

    def __init__(self, marker: str, index: int):
        self.marker = Path(marker)
        self.index = index

    def __call__(self, doc: Doc) -> Doc:
        if doc.user_data.get("index") == self.index:
            try:
                with self.marker.open("x") as file:
                    file.write(str(os.getpid()))
            except FileExistsError:
                return doc
            os.kill(os.getpid(), signal.SIGKILL)
        return doc


class RaiseOn:
    """Raises on every document that contains `token`."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, doc: Doc) -> Doc:
        if any(t.text == self.token for t in doc):
            raise ValueError(f"found {self.token!r}")
        return doc


@Language.factory("test_kill_once", default_config={"marker": "", "index": 0})
def make_kill_once(nlp: Language, name: str, marker: str, index: int) -> KillOnce:
    return KillOnce(marker, index)


@Language.factory("test_raise_on", default_config={"token": "BOOM"})
def make_raise_on(nlp: Language, name: str, token: str) -> RaiseOn:
    return RaiseOn(token)


@Language.component("test_slow")
def slow(doc: Doc) -> Doc:
    time.sleep(0.25)
    return doc
