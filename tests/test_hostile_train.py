"""Training and evaluation as a careless or hostile user drives them: numbers that are not numbers,
seeds numpy refuses, a model folder that is not one, a checkpoint that is not there or was edited,
a run that diverges, a model that diverged, empty class folders, and a set too small for a batch."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from byakugan.embedder.embedding.landmarks import LandmarkEncoder, load_landmarks
from byakugan.embedder.errors import ByakuganError, ModelError
from byakugan.embedder.training import config as train_config
from byakugan.embedder.training.data import scan
from byakugan.embedder.training.landmarks import LandmarkTrainConfig, fit
from byakugan.ui.cli import main

from .test_cli_train_eval import TINY, folder, refused


def exit_code(args) -> int:
    """main's exit code, argparse's own refusals (which exit) included."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("extra, message", [
    (["--lr", "nan"], "lr nan must be > 0, a finite number"),
    (["--lr", "inf"], "lr inf must be > 0"),
    (["--lr", "-1"], "lr -1.0 must be > 0"),
    (["--lr", "0"], "lr 0.0 must be > 0"),
    (["--head-weight", "nan"], "head weight nan must be > 0"),
    (["--backbone-lr", "nan"], "backbone lr nan must be >= 0"),
    (["--colour-weight", "inf"], "colour weight inf must be >= 0"),
    (["--seed", "-1"], "argument --seed: '-1' is not a whole number from 0 to 4294967295"),
    (["--seed", str(2**32)], "argument --seed: '4294967296' is not a whole number"),
    (["--size", "100000"], "size 100000 must be >= 32 and <= 1024, a whole number"),  # it filled 24 GB, then was killed
    (["--device", "foo"], "device 'foo': not one this machine has; valid: cpu"),
    (["--cohort-top", "3"], "cohort_top 3: the cohort holds the means of 2 classes"),  # it trained, then used all
])
def test_train_refuses_settings_that_are_not_numbers_it_can_use(tmp_path, capsys, extra, message):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    code = exit_code(["train", data, "--out", tmp_path / "m", *TINY, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("extra, message", [
    (["--seed", "-1"], "argument --seed: '-1' is not a whole number"),
    (["--epochs", "0"], "epochs 0 must be >= 1"),
    (["--threshold", "nan"], "threshold nan must be >= -1 and <= 1"),
])
def test_train_landmarks_refuses_bad_settings_before_finding_hands(tmp_path, capsys, extra, message):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    code = exit_code(["train-landmarks", data, "--out", tmp_path / "lm", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "hands found" not in "".join(err) and not (tmp_path / "lm").exists()


def test_train_landmarks_refuses_an_out_that_is_a_file_or_holds_another_model(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "afile").write_text("x")
    assert "is a file" in refused(capsys, "train-landmarks", data, "--out", tmp_path / "afile")
    LandmarkEncoder({"dim": 8, "hidden": 8}).save(tmp_path / "lm")
    line = refused(capsys, "train-landmarks", data, "--out", tmp_path / "lm")
    assert "holds a trained model; --overwrite to replace it" in line and "--resume" not in line


def test_evaluate_refuses_a_seed_numpy_cannot_take_before_embedding(tmp_path, capsys):
    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(4)})
    assert exit_code(["evaluate", data, "--shots", "2", "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --seed: '-1' is not a whole number" in err[0]
    from byakugan.embedder.evaluation.summary import check_evaluation

    with pytest.raises(ByakuganError, match=r"seed -1 must be a whole number from 0 to 4294967295"):
        check_evaluation(["a"] * 4 + ["b"] * 4, shots=2, trials=1, unknown_fraction=0, seed=-1)


def test_train_keeps_the_files_of_a_folder_that_is_not_a_model(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    line = refused(capsys, "train", data, "--out", mine, *TINY)
    assert "not a model folder (it has config.json)" in line and "give a new or empty folder" in line
    line = refused(capsys, "train", data, "--out", mine, *TINY, "--overwrite")  # overwrite is for models only
    assert "not a model folder" in line
    assert (mine / "config.json").read_text() == '{"my": "settings"}' and len(list(mine.iterdir())) == 1


def test_train_replaces_a_model_only_when_told_and_resumes_only_from_a_checkpoint(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    line = refused(capsys, "train", data, "--out", out, *TINY, "--resume")
    assert f"resume: no checkpoint in {out / 'checkpoint'}; leave out --resume" in line and not out.exists()
    assert main(["train", str(data), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    before = (out / "model.safetensors").read_bytes()
    line = refused(capsys, "train", data, "--out", out, *TINY, "--seed", "3")
    assert "holds a trained model; --resume to go on from its checkpoint, --overwrite to replace it" in line
    assert (out / "model.safetensors").read_bytes() == before
    assert "choose one" in refused(capsys, "train", data, "--out", out, *TINY, "--resume", "--overwrite")
    assert main(["train", str(data), "--out", str(out), *TINY, "--seed", "3", "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != before
    capsys.readouterr()
    # an unfinished run (a checkpoint, no model yet) is kept the same way
    for name in ("config.json", "model.safetensors", "training.json"):
        (out / name).unlink()
    assert "holds an unfinished run's checkpoint; --resume" in refused(capsys, "train", data, "--out", out, *TINY)


@pytest.mark.parametrize("state", [{"epoch": -5, "history": "abc"}, {"epoch": 10**12, "history": []},
                                   {"epoch": 1, "history": [1]}, {"epoch": True, "history": [{}]}, [1, 2]])
def test_resume_refuses_an_edited_checkpoint_state(tmp_path, capsys, state):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    (out / "checkpoint" / "state.json").write_text(json.dumps(state))
    line = refused(capsys, "train", data, "--out", out, *TINY, "--epochs", "2", "--resume")
    assert f"checkpoint {out / 'checkpoint' / 'state.json'}: damaged" in line


def test_a_diverging_run_stops_and_saves_nothing(tmp_path, monkeypatch):
    class NaNLoss(torch.nn.Module):
        def forward(self, z, labels, pairs=None):
            return z.sum() * math.nan

    monkeypatch.setitem(train_config.LOSSES, "multisimilarity", lambda n, d: NaNLoss())
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 128)).astype(np.float32), np.repeat(["a", "b", "c", "d"], 10)
    with pytest.raises(ByakuganError, match=r"training diverged in epoch 1: the loss is nan; the model was not saved \(a lower learning rate"):
        fit(X, y, LandmarkTrainConfig(data=[], out=str(tmp_path / "lm"), epochs=1), log=lambda m: None)
    assert not (tmp_path / "lm").exists()


def test_a_model_with_nan_weights_or_settings_is_refused_on_load(tmp_path):
    model = LandmarkEncoder({"dim": 8, "hidden": 8})
    with torch.no_grad():
        next(model.parameters())[0, 0] = math.nan
    model.save(tmp_path / "nan")
    with pytest.raises(ModelError, match=r"model.safetensors: .* holds NaN or infinite values .* retrain it"):
        load_landmarks(tmp_path / "nan")
    LandmarkEncoder({"dim": 8, "hidden": 8}).save(tmp_path / "cfg")
    cfg = tmp_path / "cfg" / "config.json"
    cfg.write_text(cfg.read_text().replace('"threshold": 0.5', '"threshold": NaN'))
    with pytest.raises(ModelError, match=r"config.json: not valid JSON \(NaN is not a number a model config may hold"):
        load_landmarks(tmp_path / "cfg")


def test_a_landmark_set_smaller_than_a_batch_trains(tmp_path):
    """3 classes x 6 samples under the defaults (batch 128, 8 per class): one short batch an epoch."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((18, 128)).astype(np.float32), np.repeat(["a", "b", "c"], 6)
    model, history = fit(X, y, LandmarkTrainConfig(data=[], out=str(tmp_path / "lm"), epochs=2), log=lambda m: None)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert model.encode(X).shape == (18, 64)


def test_empty_class_folders_are_named_not_dropped(tmp_path):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    (data / "c").mkdir()
    (data / ".ipynb_checkpoints").mkdir()  # hidden: no class
    with pytest.raises(ByakuganError, match=r"data folder .*d: class folder c holds no images; add images or move"):
        scan([data])
    (data / "c").rmdir()
    assert sorted({s.label for s in scan([data])}) == ["d/a", "d/b"]


def test_numpy_numbers_are_taken_as_numbers_and_stored_as_python_ones(tmp_path):
    from byakugan.embedder.training.metric import TrainConfig, train

    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "m"), views=np.int64(1), epochs=np.int64(1), size=64,
                      head_dim=8, batch_size=8, m_per_class=2, lr=np.float32(1e-3), seed=np.int64(3), device="cpu")
    train(cfg, log=lambda m: None)
    saved = json.loads((tmp_path / "m" / "training.json").read_text())["config"]
    assert (saved["epochs"], saved["seed"], type(saved["lr"])) == (1, 3, float)
    lm = LandmarkTrainConfig(data=[], out=str(tmp_path / "lm"), weight=np.float32(0.4), dim=np.int64(8), seed=np.int64(1))
    lm.check()
    assert (type(lm.weight), type(lm.dim), type(lm.seed)) == (float, int, int)
    for bad, message in ((dict(cohort_top=math.nan), "cohort top nan must be >= 0, a whole number"),
                         (dict(epochs=np.float64(2.0)), "epochs 2.0 must be >= 1, a whole number"),
                         (dict(per_class=-10**400), "per class -1000")):  # past float's range: no OverflowError
        with pytest.raises(ByakuganError, match=message):
            TrainConfig(data=[], out=str(tmp_path / "x"), **bad).check()


def test_resume_trains_at_the_rate_asked_for_now(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), *TINY]) == 0
    assert main(["train", str(data), "--out", str(out), *TINY, "--epochs", "2", "--lr", "0.0005", "--resume"]) == 0
    assert not (out / "checkpoint" / "optimizer.pt").exists()  # no pickle: safetensors, settings as JSON
    with safe_open(str(out / "checkpoint" / "optimizer.safetensors"), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    assert [g["lr"] for g in groups] == [0.0005, 0.0005]
    # a checkpoint an older byakugan wrote (a pickle) is refused, not loaded
    (out / "checkpoint" / "optimizer.safetensors").rename(out / "checkpoint" / "optimizer.pt")
    capsys.readouterr()
    line = refused(capsys, "train", data, "--out", out, *TINY, "--epochs", "3", "--resume")
    assert "written by an older byakugan (optimizer.pt, a pickle, which is not loaded)" in line


def test_an_unfinished_run_with_its_cache_beside_it_can_be_resumed_or_replaced(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    args = ["train", str(data), "--out", str(out), *TINY, "--cache", str(out / "cache")]
    assert main(args) == 0
    for name in ("config.json", "model.safetensors", "training.json"):
        (out / name).unlink()  # stopped before it saved the model
    (out / ".DS_Store").write_text("")
    capsys.readouterr()
    assert "holds an unfinished run's checkpoint" in refused(capsys, *args)
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "training.json").read_text())["history"][-1]["epoch"] == 2
    assert embedder_name(out) == "m"


def embedder_name(path):
    return json.loads((path / "config.json").read_text())["name"]


def test_a_model_trained_into_dot_is_named_after_the_folder(tmp_path, monkeypatch, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert main(["train", str(data), "--out", ".", *TINY]) == 0
    assert embedder_name(tmp_path / "here") == "here"


def test_train_landmarks_overwrite_replaces_its_model(tmp_path, monkeypatch):
    """--overwrite lets a landmark model be trained again into its folder (landmarks faked: no MediaPipe)."""
    from byakugan.embedder.training import landmarks

    data = folder(tmp_path / "d", {"a": 6, "b": 6, "c": 6})
    rng = np.random.default_rng(0)
    monkeypatch.setattr(landmarks, "extract", lambda samples, cache: (rng.standard_normal((len(samples), 128)).astype(np.float32),
                                                                      np.ones(len(samples), bool)))
    cfg = dict(data=[str(data)], out=str(tmp_path / "lm"), epochs=1, dim=8)
    landmarks.train_landmarks(LandmarkTrainConfig(**cfg), log=lambda m: None)
    with pytest.raises(ByakuganError, match="holds a trained model; --overwrite to replace it"):
        landmarks.train_landmarks(LandmarkTrainConfig(**cfg), log=lambda m: None)
    landmarks.train_landmarks(LandmarkTrainConfig(**cfg, seed=5), log=lambda m: None, overwrite=True)
    assert load_landmarks(tmp_path / "lm").dim == 8


def test_a_run_stopped_before_its_first_checkpoint_with_its_cache_inside_out_starts_again(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    (out / "cache").mkdir(parents=True)  # features cached, then stopped: no checkpoint, no model
    (out / "cache" / "d-0123.safetensors").write_bytes(b"")
    assert main(["train", str(data), "--out", str(out), *TINY, "--cache", str(out / "cache")]) == 0
    assert (out / "config.json").is_file()


def test_train_refuses_an_out_inside_its_data_and_a_cache_it_cannot_write(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "file").write_text("x")
    for command in ("train", "train-landmarks"):
        code = exit_code([command, data, "--out", data / "model", *(TINY if command == "train" else [])])
        err = capsys.readouterr().err
        assert code == 2 and "lies inside the data folder" in err and not (data / "model").exists(), err
        code = exit_code([command, data, "--out", tmp_path / "m", "--cache", tmp_path / "file"])
        err = capsys.readouterr().err
        assert code == 2 and "cache " in err and "is a file" in err and not (tmp_path / "m").exists(), err


def test_resume_says_when_the_backbone_was_frozen_and_refuses_an_edited_optimizer_state(tmp_path, capsys):
    from safetensors.torch import save_file

    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    line = refused(capsys, "train", data, "--out", out, *TINY, "--epochs", "3", "--resume", "--backbone-lr", "1e-3")
    assert "resume: the checkpoint's run kept the backbone frozen; resume without --backbone-lr" in line
    path = out / "checkpoint" / "optimizer.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    groups = json.loads(meta["param_groups"])
    key = next(k for k in tensors if k.endswith("exp_avg"))
    edits = {"weight decay": (tensors, meta | {"param_groups": json.dumps([g | {"weight_decay": "abc"} for g in groups])}),
             "shape": (tensors | {key: tensors[key].flatten()[:3].contiguous()}, meta),
             "nan": (tensors | {key: tensors[key] * float("nan")}, meta)}
    for what, (t, m) in edits.items():
        save_file(t, str(path), m)
        line = refused(capsys, "train", data, "--out", out, *TINY, "--epochs", "3", "--resume")
        assert f"checkpoint {path}: damaged" in line and "--overwrite to start over" in line, what


def test_a_run_cut_off_in_its_first_checkpoint_can_be_overwritten(tmp_path, capsys):
    """A full disk or a kill between the checkpoint folder and its state.json left a folder that no
    option would take back: only deleting it by hand."""
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "model.safetensors").write_bytes(b"cut off")
    (out / "checkpoint" / ".state.json.tmp-123").write_bytes(b"")
    assert "holds an unfinished run's checkpoint; --resume" in refused(capsys, "train", data, "--out", out, *TINY)
    assert main(["train", str(data), "--out", str(out), *TINY, "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "checkpoint" / "state.json").is_file()
    capsys.readouterr()
    (out / "checkpoint" / "notes.txt").write_text("mine")  # a user's own file there: not the run's to replace
    for name in ("config.json", "model.safetensors", "training.json", "checkpoint/state.json"):
        (out / name).unlink()
    assert "not a model folder" in refused(capsys, "train", data, "--out", out, *TINY, "--overwrite")


def test_a_feature_cache_is_not_used_for_images_replaced_under_the_same_names(tmp_path, capsys):
    """The cache was keyed by the images' paths alone: a run after they were replaced trained on the old ones."""
    import os

    from PIL import Image

    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    cache = tmp_path / "cache"

    def weights(out):
        return (out / "model.safetensors").read_bytes()

    assert main(["train", str(data), "--out", str(tmp_path / "m1"), *TINY, "--cache", str(cache)]) == 0
    for i, f in enumerate(sorted((data / "a").iterdir())):
        Image.new("RGB", (40, 40), (0, 0, 200 + i)).save(f)
        os.utime(f, ns=(1, 1))  # an mtime of its own, whatever the clock's resolution
    assert main(["train", str(data), "--out", str(tmp_path / "m2"), *TINY, "--cache", str(cache)]) == 0
    assert main(["train", str(data), "--out", str(tmp_path / "m3"), *TINY]) == 0
    assert weights(tmp_path / "m2") == weights(tmp_path / "m3") != weights(tmp_path / "m1")
    assert main(["train", str(data), "--out", str(tmp_path / "m4"), *TINY, "--cache", str(cache)]) == 0  # from the cache
    assert weights(tmp_path / "m4") == weights(tmp_path / "m3")
    capsys.readouterr()


@pytest.mark.parametrize("edit, said", [
    ({"threshold": 5}, "threshold '5' must be a number from -2 to 2"),
    ({"threshold": "abc"}, "threshold 'abc' must be a number from -2 to 2"),
    ({"threshold": "OVERFLOW"}, "threshold 'inf' must be a number from -2 to 2"),  # 1e400, which JSON reads as inf
    ({"adapted_threshold": [1]}, "adapted_threshold '[1]' must be a number"),
    ({"preprocess": {"std": [0, 0, 0]}}, "std above 0"),
    ({"preprocess": {"mean": [1, 2]}}, "three finite numbers each"),
    ({"preprocess": {"std": ["x", 1, 1]}}, "must be three numbers each"),
])
def test_a_model_whose_config_a_gallery_would_refuse_is_refused_when_loaded(tmp_path, edit, said):
    """A threshold of 5 made galleries no command could open again; a std of 0 made every vector NaN."""
    import shutil

    from byakugan.embedder import load
    from byakugan.embedder.embedding.hub import models_dir

    shutil.copytree(models_dir() / "default", tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    for key, value in edit.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (tmp_path / "m" / "config.json").write_text(json.dumps(config).replace('"OVERFLOW"', "1e400"))
    with pytest.raises(ModelError, match=said.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path / "m")


def test_a_damaged_shipped_model_is_named_not_passed_over(tmp_path, monkeypatch, capsys):
    """A shipped model whose config.json could not be read was skipped: anime galleries quietly took `default`."""
    import shutil

    from byakugan.embedder.embedding.hub import models_dir, model_for

    shipped = models_dir()
    shutil.copytree(shipped, tmp_path / "models", ignore=shutil.ignore_patterns("*.safetensors", "*.onnx", "*.npy"))
    name = model_for("anime-face")
    assert name != "default"
    (tmp_path / "models" / name / "config.json").write_text("{")
    monkeypatch.setenv("BYAKUGAN_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(ModelError, match=f"model {name}: .*config.json cannot be read"):
        model_for("anime-face")
    assert exit_code(["models"]) == 2 and f"model {name}:" in capsys.readouterr().err


def test_a_data_folder_given_twice_is_refused(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    line = refused(capsys, "train", data, tmp_path / "d" / ".", "--out", tmp_path / "m", *TINY)
    assert "given twice" in line and not (tmp_path / "m").exists()


def test_an_empty_checkpoint_folder_beside_other_files_is_not_taken_for_a_run(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    (out / "checkpoint").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    assert "not a model folder" in refused(capsys, "train", data, "--out", out, *TINY, "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"


def test_a_missing_default_model_is_named_not_replaced_by_imagenet_features(tmp_path, monkeypatch):
    """It gave frozen ImageNet features (1280 numbers) under the name `default` (1408)."""
    from byakugan.embedder import load

    monkeypatch.setenv("BYAKUGAN_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="model default: .*default is missing .*'imagenet' names frozen ImageNet"):
        load("default")
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "x.png")
    assert exit_code(["embed", str(tmp_path / "x.png"), "--out", str(tmp_path / "e.npy")]) == 2
    assert not (tmp_path / "e.npy").exists()
    assert load("imagenet")[0].name == "imagenet"


def test_a_second_training_into_the_same_folder_is_refused_while_the_first_runs(tmp_path, capsys):
    from byakugan.embedder.training.outlock import LOCK, training_into

    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    with training_into(out):  # the first run, still training
        for command, extra in (("train", TINY), ("train-landmarks", [])):
            line = refused(capsys, command, data, "--out", out, *extra)
            assert line == f"byakugan: error: out {out}: another training is writing its model there now; wait for it " \
                           "to end, or give another folder"
    assert not out.exists()  # made for the run, and nothing saved: gone again, its lock with it
    assert main(["train", str(data), "--out", str(out), *TINY]) == 0
    assert not (out / LOCK).exists() and (out / "model.safetensors").is_file()


def test_a_save_that_fails_over_a_model_keeps_the_model_it_had(tmp_path, capsys, monkeypatch):
    from byakugan.embedder import load
    from byakugan.embedder.embedding import files

    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    out = tmp_path / "m"
    cohort = ["--cohort-top", "2", "--cohort-per-class", "2"]  # a file beside the weights, kept with them
    assert main(["train", str(data), "--out", str(out), *TINY, *cohort]) == 0
    before, kept = load(str(out))[0].fingerprint(), (out / "cohort.safetensors").read_bytes()
    real = files.write_atomic

    def config_refused(path, data, **kw):  # the weights written, then the config cannot be (a full disk, say)
        if path.name == files.CONFIG_FILE:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data, **kw)

    monkeypatch.setattr(files, "write_atomic", config_refused)
    assert main(["train", str(data), "--out", str(out), *TINY, *cohort, "--seed", "3", "--overwrite"]) != 0
    monkeypatch.undo()
    capsys.readouterr()
    assert load(str(out))[0].fingerprint() == before and not list(out.glob(".*before*"))
    assert (out / "cohort.safetensors").read_bytes() == kept


def test_pairs_need_two_pictures_of_a_class_and_a_cache_may_not_lie_in_the_data(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    tiny = [x for x in TINY if x not in ("--m-per-class", "2")]
    line = refused(capsys, "train", data, "--out", tmp_path / "m", *tiny, "--m-per-class", "1")
    assert "m per class 1: loss 'multisimilarity' with miner 'multisimilarity' learns from two or more pictures" in line
    line = refused(capsys, "train", data, "--out", tmp_path / "m", *TINY, "--cache", data / "cache")
    assert f"cache {data / 'cache'}: lies inside the data folder {data}" in line and not (data / "cache").exists()
