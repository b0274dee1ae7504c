"""Components that misbehave on purpose, imported with `--code`/`code_path`
by the tests' workers: one kills its own worker process once, one crashes it
on every document with a marker token, one raises, one is slow enough that
a run can be stopped part-way."""
import ctypes
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


class OnToken:
    """Raises, or crashes its process if `crash` (a real segmentation fault,
    on this thread: `os.kill(pid, SIGSEGV)` may be handled on another of the
    worker's threads while this one goes on and raises), on every document
    that contains `token`."""

    def __init__(self, token: str, crash: bool):
        self.token = token
        self.crash = crash

    def __call__(self, doc: Doc) -> Doc:
        if any(t.text == self.token for t in doc):
            if self.crash:
                ctypes.string_at(0)
            raise ValueError(f"found {self.token!r}")
        return doc


@Language.factory("test_kill_once", default_config={"marker": "", "index": 0})
def make_kill_once(nlp: Language, name: str, marker: str, index: int) -> KillOnce:
    return KillOnce(marker, index)


@Language.factory("test_raise_on", default_config={"token": "BOOM"})
def make_raise_on(nlp: Language, name: str, token: str) -> OnToken:
    return OnToken(token, crash=False)


@Language.factory("test_crash_on", default_config={"token": "CRASH"})
def make_crash_on(nlp: Language, name: str, token: str) -> OnToken:
    return OnToken(token, crash=True)


@Language.component("test_slow")
def slow(doc: Doc) -> Doc:
    time.sleep(0.25)
    return doc
