"""The shipped configs, installed as the package data of spacy_pytorch_shim.configs
(read by `python -m spacy init torch-config`, see spacy_pytorch_shim/init_config.py)."""
