"""Annotate corpora with a trained pipeline on a Ray cluster: streamed
shards, exactly once, resumable (docs/ray.md). Needs the `ray` extra:
`pip install "spacy-pytorch-shim[ray]"`; Ray itself is imported only when a
run starts."""
from .run import AnnotateResult, AnnotationError, WorkerStats, annotate, read_annotations
from .inputs import InputError
from .manifest import ERRORS, MANIFEST, OutputError, PipelineError

__all__ = [
    "annotate",
    "read_annotations",
    "AnnotateResult",
    "WorkerStats",
    "AnnotationError",
    "InputError",
    "OutputError",
    "PipelineError",
    "MANIFEST",
    "ERRORS",
]
