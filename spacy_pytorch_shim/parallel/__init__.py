"""Deprecated name of `spacy_pytorch_shim.data_parallel` (data-parallel
training), kept importable for one release: `python -m torch.distributed.run
... -m spacy_pytorch_shim.parallel.train` still runs."""
import warnings

warnings.warn(
    "spacy_pytorch_shim.parallel is now spacy_pytorch_shim.data_parallel; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
