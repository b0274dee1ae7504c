"""Thinc 8.3's own `thinc/tests/layers/test_pytorch_wrapper.py`, run against
`TorchWrapper` in place of `PyTorchWrapper` and `PyTorchWrapper_v2`."""
from thinc.tests.layers import test_pytorch_wrapper as thinc_test_pytorch_wrapper

from spacy_pytorch_shim import TorchWrapper

from .conftest import adapt

globals().update(
    adapt(
        thinc_test_pytorch_wrapper,
        replace={"PyTorchWrapper": TorchWrapper, "PyTorchWrapper_v2": TorchWrapper},
        skips={
            "test_pytorch_wrapper_custom_serde": "tests PyTorchWrapper_v3's serialize_model/deserialize_model hooks, which TorchWrapper has no counterpart of: it saves safetensors (docs/serialization.md)",
        },
    )
)
