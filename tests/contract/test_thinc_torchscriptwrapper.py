"""Thinc 8.3's own `thinc/tests/layers/test_torchscriptwrapper.py`, run
against `TorchWrapper` in place of `PyTorchWrapper_v2`: Thinc's
`pytorch_to_torchscript_wrapper` converts our wrapper as it converts its own."""
from thinc.tests.layers import test_torchscriptwrapper as thinc_test_torchscriptwrapper

from spacy_pytorch_shim import TorchWrapper

from .conftest import adapt

globals().update(
    adapt(thinc_test_torchscriptwrapper, replace={"PyTorchWrapper_v2": TorchWrapper}, skips={})
)
