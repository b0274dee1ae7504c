"""spaCy's `debug data` and `debug model` on our pipelines (what they can
show of the torch parts is in docs/quickstart.md, "Debugging")."""
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("config", ["ner", "textcat"])
def test_debug_data(cli, config):
    # The whole sample: on fewer than 1000 docs debug data fails ("Low number of examples").
    sample = cli.DATA / cli.CONFIG_DATA[config][0]
    result = cli.run(["debug", "data", cli.CONFIGS / f"{config}.cfg", "--paths.train", sample / "train.spacy", "--paths.dev", sample / "dev.spacy"])
    assert f"Training pipeline: torch_{config}" in result.stdout
    assert "training docs" in result.stdout and "checks passed" in result.stdout


def test_debug_model_lists_the_torch_layers_and_predicts(cli, tiny_data):
    data = tiny_data["btc-sample"]
    result = cli.run(
        ["debug", "model", cli.CONFIGS / "ner.cfg", "torch_ner", "-DIM", "-P0", "-P3",
         "--paths.train", data["train"], "--paths.dev", data["dev"]]
    )
    for layer in ("torch_tok2vec_encoder", "torch_ner_head", "hashed_token_features"):
        assert f"'{layer}'" in result.stdout, result.stdout[-3000:]
    assert "STEP 3 - prediction" in result.stdout
