"""Data-parallel training on torch.distributed: `spacy train-distributed`
(see docs/distributed-training.md). `sync` sums the ranks' gradients and is
installed into the core through `models/collective.py`; `train` is the
program each rank runs."""
