"""Deprecated: `-m spacy_pytorch_shim.parallel.train` runs
`spacy_pytorch_shim.data_parallel.train` (see that module)."""
from ..data_parallel.train import *  # noqa: F401,F403
from ..data_parallel.train import main

if __name__ == "__main__":
    main()
