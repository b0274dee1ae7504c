"""Data-parallel training on torch.distributed: `spacy train-distributed`
(see docs/distributed-training.md). Only the gradient sync is imported here:
the shim imports it, and the training entry needs spaCy's training loop."""
from .sync import all_reduce_gradients, gradients_to_sync, sync_active

__all__ = ["all_reduce_gradients", "gradients_to_sync", "sync_active"]
