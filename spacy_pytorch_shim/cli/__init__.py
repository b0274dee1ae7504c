"""The commands this package adds to spaCy's CLI, one module each, registered
through setup.cfg's `spacy_cli` entry points."""
