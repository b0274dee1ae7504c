"""Distillation as a user runs it (docs/distillation.md): `spacy
teacher-targets` scores unlabelled text with a trained pipeline once, then
`spacy train` trains a student on the gold plus the scored text through
DistillationCorpus.v1 (docs/distillation.md runs the same commands)."""
import json

import pytest
from spacy.tokens import DocBin
from spacy.util import load_config
from spacy.vocab import Vocab


@pytest.fixture(scope="module")
def unlabelled(cli, tiny_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("unlabelled") / "texts.jsonl"
    docs = DocBin().from_disk(tiny_data["banking77-sample"]["test"]).get_docs(Vocab())
    path.write_text("".join(json.dumps({"text": doc.text}) + "\n" for doc in docs), encoding="utf8")
    return path


def test_score_once_then_train_a_student_on_gold_plus_teacher_targets(cli, trained, tiny_data, unlabelled, tmp_path):
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
    config = tmp_path / "student.cfg"
    cli.run(["init", "torch-config", config, "--pipeline", "textcat", "--distill"])
    assert load_config(config)["corpora"]["train"]["@readers"] == "spacy-pytorch-shim.DistillationCorpus.v1"
    data = tiny_data["banking77-sample"]
    output = tmp_path / "student"
    train = cli.run(cli.train_args(config, data, output, ["--paths.targets", targets]))
    assert (output / "model-last" / "torch_textcat").is_dir(), train.stdout


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
