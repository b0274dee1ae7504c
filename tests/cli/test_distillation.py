"""Distillation as a user runs it (docs/distillation.md): `spacy
teacher-targets` scores unlabelled text with a trained pipeline once, in
shards, and refuses to overwrite without --force. Training a student on the
scored text with `spacy train` runs in docs/distillation.md's commands and
in project.yml's distill workflow (tests/test_project.py)."""
import json

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab


@pytest.fixture(scope="module")
def unlabelled(cli, tiny_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("unlabelled") / "texts.jsonl"
    docs = DocBin().from_disk(tiny_data["banking77-sample"]["test"]).get_docs(Vocab())
    path.write_text("".join(json.dumps({"text": doc.text}) + "\n" for doc in docs), encoding="utf8")
    return path


def test_score_once_in_shards_and_again_with_force(cli, trained, unlabelled, tmp_path):
    teacher = cli.trained_pipeline(trained, "textcat") / "model-best"
    targets = tmp_path / "targets"
    scored = cli.run(["teacher-targets", teacher, unlabelled, targets, "--shard-size", "8"])
    assert "bytes per doc" in scored.stdout
    info = cli.read_json(targets / "teacher.json")
    assert info["docs"] == 20 and list(info["components"]) == ["torch_textcat"]
    assert info["components"]["torch_textcat"]["factory"] == "torch_textcat"
    assert len(list(targets.glob("*.spacy"))) == 3
    # Scoring again into the same directory needs --force.
    again = cli.run(["teacher-targets", teacher, unlabelled, targets], check=False)
    assert again.returncode == 1 and "--force" in again.stdout
    cli.run(["teacher-targets", teacher, unlabelled, targets, "--force"])
    assert len(list(targets.glob("*.spacy"))) == 1 and cli.read_json(targets / "teacher.json")["docs"] == 20


def test_a_component_that_is_not_a_torch_one_is_a_one_line_error(cli, trained, unlabelled, tmp_path):
    teacher = cli.trained_pipeline(trained, "textcat") / "model-best"
    done = cli.run(["teacher-targets", teacher, unlabelled, tmp_path / "out", "--components", "tok2vec"], check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "'tok2vec' is not a torch component of the teacher (its torch components: ['torch_textcat'])" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_that_holds_files_is_refused(cli, unlabelled, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    done = cli.run(["teacher-targets", "no-such-pipeline", unlabelled, tmp_path / "out"], check=False)
    assert done.returncode == 1 and "not an empty directory" in done.stdout
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    # --force replaces earlier targets only: a user's file is never deleted.
    (tmp_path / "out" / "teacher.json").write_text("{}")
    done = cli.run(["teacher-targets", "no-such-pipeline", unlabelled, tmp_path / "out", "--force"], check=False)
    assert done.returncode == 1 and "--force replaces earlier targets only, and it holds keep.txt" in done.stdout
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
