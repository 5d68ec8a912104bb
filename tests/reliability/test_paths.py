"""Names are not paths: `name`, `search.study_name` and `registry.model_name` are checked up front,
and every folder the project writes or deletes is checked to lie inside its own folder."""

import zipfile

import optuna
import pytest
from conftest import tiny_experiment

from orchestrator.search import wrap_up as champion
from orchestrator.config import paths
from orchestrator.cli import main

BAD_NAMES = ["../../../escaped", "/tmp/absolute", "a/b", "it's", "x:y", "..", ".hidden", "", "a b", "ü" * 3,
             "n" * 129, "back\\slash"]


@pytest.mark.parametrize("key", ["name", "search.study_name", "registry.model_name"])
def test_names_that_would_leave_the_work_dir_are_refused_before_anything_exists(tmp_path, tiny_model, data_dir,
                                                                                monkeypatch, capsys, key):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    experiment = tiny_experiment(tmp_path / "p.yaml", tiny_model, data_dir, "paths")
    for bad in BAD_NAMES:
        assert main(["search", "--config", str(experiment), f"{key}={bad!r}"]) == 2, bad
        err = capsys.readouterr().err
        assert f"{key}: " in err and "is not a usable name" in err, err
    assert list(work.iterdir()) == []  # no mlruns, no lock file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "p.yaml", "work"]
    assert not (tmp_path.parent / "escaped").exists()


def test_checkpoint_cleanup_never_deletes_outside_the_study_folder(tmp_path):
    """Even if a study's checkpoints folder is made a link to somewhere else."""
    outside = tmp_path / "precious"
    (outside / "trial-7").mkdir(parents=True)
    (outside / "trial-7" / "weights.safetensors").write_text("keep me")
    study_dir = tmp_path / "studies" / "s"
    study_dir.mkdir(parents=True)
    (study_dir / "checkpoints").symlink_to(outside, target_is_directory=True)
    study = optuna.create_study()
    with pytest.raises(paths.PathError, match="outside"):
        champion.drop_other_checkpoints(study_dir, study, None)
    assert (outside / "trial-7" / "weights.safetensors").read_text() == "keep me"


def test_inside_accepts_the_folder_and_below_only(tmp_path):
    assert paths.inside(tmp_path, tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    assert paths.inside(tmp_path, tmp_path) == tmp_path.resolve()
    for escape in (tmp_path / ".." / "x", tmp_path.parent, "/etc"):
        with pytest.raises(paths.PathError):
            paths.inside(tmp_path, escape)


def test_a_zip_member_cannot_name_a_path_outside_the_cache(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.csv", "text,label\n")
    for member in ("../../evil.csv", "/etc/passwd"):
        with pytest.raises(paths.PathError, match="relative path without"):
            paths.resolve(f"{archive}!{member}")
