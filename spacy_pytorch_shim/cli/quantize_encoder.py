"""`python -m spacy quantize-encoder PIPELINE OUTPUT`: a trained pipeline
with every Hugging Face encoder's linear layers stored as int8, for serving
on CPU (models/transformer/int8.py)."""
from pathlib import Path

from spacy.cli._util import Arg, app
from wasabi import msg

from . import fail


@app.command("quantize-encoder")
def quantize_encoder_cli(
    # fmt: off
    pipeline: str = Arg(..., help="A trained pipeline's directory or package name"),
    output: Path = Arg(..., help="Directory to save the int8 pipeline to"),
    # fmt: on
):
    """Store the Hugging Face encoders (spacy-pytorch-shim.HFEncoder) of a
    trained pipeline as int8 weights."""
    import spacy

    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"{output}: exists and is not an empty directory; give a new one")
    try:
        nlp = spacy.load(pipeline)
    except (OSError, ValueError) as err:
        fail(f"{pipeline}: cannot be loaded ({err})")
    count = quantize_pipeline(nlp)
    if not count:
        fail(f"{pipeline}: has no Hugging Face encoder (spacy-pytorch-shim.HFEncoder) to quantize")
    nlp.to_disk(output)
    msg.good(f"Saved {output} with {count} encoder(s) in int8")


def quantize_pipeline(nlp) -> int:
    """Quantize every Hugging Face encoder of the pipeline not yet in int8;
    how many."""
    from ..models.transformer.shim import HFShim

    count = 0
    for _, component in nlp.components:
        model = getattr(component, "model", None)
        for node in model.walk() if model is not None else ():
            for shim in node.shims:
                if isinstance(shim, HFShim) and shim.quantization is None:
                    shim.quantize_int8()
                    count += 1
    return count
