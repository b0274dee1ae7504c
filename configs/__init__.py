"""The shipped configs, installed as the package data of spacy_pytorch_shim.configs
(read by `python -m spacy init torch-config`, see spacy_pytorch_shim/cli/init_torch_config.py)."""
