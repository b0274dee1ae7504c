"""Hugging Face encoders as spaCy token-to-vector layers (`transformers`
is imported only when an encoder is loaded)."""
from .encoder import build_hf_encoder

__all__ = ["build_hf_encoder"]
