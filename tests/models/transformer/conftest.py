from pathlib import Path
from typing import Callable, Dict

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Callable[[str], Path]:
    """kind -> a directory holding a tiny random encoder of that kind and its
    trained tokenizer (built once per session, on first use)."""
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[transformers]')")
    pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install -e '.[transformers]')")
    from tiny_encoders import sample_texts, save_tiny_encoder

    root = tmp_path_factory.mktemp("encoders")
    built: Dict[str, Path] = {}
    texts = []

    def get(kind: str) -> Path:
        if kind not in built:
            if not texts:
                texts.extend(sample_texts())
            built[kind] = save_tiny_encoder(kind, root / kind, texts)
        return built[kind]

    return get
