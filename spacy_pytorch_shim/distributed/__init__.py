"""Deprecated name of `spacy_pytorch_shim.annotate` (Ray annotation), kept
importable for one release."""
import warnings

from ..annotate import *  # noqa: F401,F403
from ..annotate import __all__  # noqa: F401

warnings.warn(
    "spacy_pytorch_shim.distributed is now spacy_pytorch_shim.annotate; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
