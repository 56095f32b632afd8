"""Training, the enrolment protocol and `byakugan evaluate`, on small seeded samples."""

import json

import numpy as np
import pytest

import byakugan.embedder as embedder
from byakugan.embedder.evaluation.protocol import enrolment_trials, roc_auc
from byakugan.ui.cli import main


def clusters(n_classes, per_class, spread, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, 32))
    x = np.repeat(centres, per_class, 0) + spread * rng.standard_normal((n_classes * per_class, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"c{i}" for i in range(n_classes) for _ in range(per_class)]


def test_protocol_separates_clean_clusters_and_not_noise():
    x, y = clusters(6, 20, 0.05)
    s = enrolment_trials(x, y, shots=5, trials=5).summary
    assert s["top1_nearest"] == 1.0 and s["top1_prototype"] == 1.0
    assert s["unknown_classes_per_trial"] == 2 and s["roc_auc"] > 0.99 and s["far_at_tar95"] == 0.0
    x, y = clusters(6, 20, 50.0)  # noise swamps the centres
    s = enrolment_trials(x, y, shots=5, trials=5).summary
    assert s["top1_nearest"] < 0.5 and 0.3 < s["roc_auc"] < 0.7
    assert roc_auc(np.array([1.0, 2.0]), np.array([0.0, 2.0])) == 0.625


def test_protocol_names_the_unknown_classes_that_pass_for_known_ones():
    x, y = clusters(5, 20, 0.05)
    x[80:] = clusters(1, 20, 0.05)[0]  # c4: another sample around c0's centre (the same seed draws it first)
    by_class = enrolment_trials(x, y, shots=5, trials=30, unknown_fraction=0.2).summary["far_at_tar95_by_unknown_class"]
    assert by_class["c4"][0] > 0.5 and by_class["c4"][1] > 0.5  # accepted as c0 whenever c0 is enrolled
    assert by_class["c2"] == [0.0, 0.0]


def test_protocol_rejects_too_few_images():
    x, y = clusters(3, 5, 0.1)
    with pytest.raises(ValueError, match="no images left to query"):
        enrolment_trials(x, y, shots=5)


def test_train_saves_a_loadable_model_and_resumes(datasets, tmp_path, capsys):
    out = tmp_path / "tiny"
    args = ["train", str(datasets / "sign-digits"), str(datasets / "rock-paper-scissors"), "--out", str(out),
            "--per-class", "8", "--views", "1", "--dim", "16", "--holdout", "sign-digits/0", "sign-digits/1",
            "sign-digits/2", "--cache", str(tmp_path / "cache")]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0  # continues at epoch 2, features from the cache
    err = capsys.readouterr().err
    assert "resumed from" in err and err.count('"epoch": 2') == 1 and err.count('"epoch": 1') == 1
    record = json.loads((out / "training.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert 0 <= record["history"][-1]["heldout_precision_at_1"] <= 1
    cached = sorted((tmp_path / "cache").iterdir())
    other = [a if a != str(out) else str(tmp_path / "other") for a in args]
    assert main([*other, "--epochs", "1", "--dim", "8", "--loss", "proxyanchor", "--miner", "none",
                 "--colour-weight", "0.5", "--scoring", "mean", "--cohort-top", "2", "--cohort-per-class", "3"]) == 0
    assert sorted((tmp_path / "cache").iterdir()) == cached  # another head reuses the backbone's features
    coloured = embedder.load(str(tmp_path / "other"))[0]
    assert coloured.dim == 1280 + 8 + 192 and coloured.config["colour"]["weight"] == 0.5
    assert coloured.config["scoring"] == "mean"
    # the cohort: one unit class mean for each of the 10 training classes (7 digits + 3 gestures)
    assert coloured.config["cohort"] == {"top": 2} and coloured.cohort.shape == (10, coloured.dim)
    np.testing.assert_allclose(np.linalg.norm(coloured.cohort, axis=1), 1, atol=1e-5)
    assert (tmp_path / "other" / "cohort.safetensors").is_file() and embedder.load(str(out))[0].cohort is None
    model, pre = embedder.load(str(out))
    assert model.dim == 1280 + 16 and pre.size == 160 and not model.training
    e = model.embed([next((datasets / "sign-digits" / "0").glob("*.jpg"))])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def test_train_rejects_unknown_names(datasets, tmp_path, capsys):
    assert main(["train", str(datasets / "sign-digits"), "--out", str(tmp_path / "m"), "--loss", "hinge"]) == 2
    assert "loss 'hinge' is not one of triplet, multisimilarity" in capsys.readouterr().err
    assert main(["train", str(datasets / "sign-digits"), "--out", str(tmp_path / "m"), "--holdout", "sign-digits/x"]) == 2
    assert "held-out classes ['sign-digits/x'] not found" in capsys.readouterr().err
    assert main(["train", str(datasets / "sign-digits"), "--out", str(tmp_path / "m"), "--colour-weight", "-1"]) == 2
    assert "colour weight -1.0 must be >= 0" in capsys.readouterr().err


def test_evaluate_writes_figures_and_plots(datasets, tmp_path, capsys):
    report = tmp_path / "report"
    code = main(["evaluate", str(datasets / "rock-paper-scissors"), "--per-class", "12", "--trials", "3",
                 "--json", "--report", str(report)])
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["classes"] == 3 and s["images"] == 36 and set(s["per_class_top1_nearest"]) == {"paper", "rock", "scissors"}
    assert 0 <= s["far_at_tar95"] <= 1 and 0 <= s["roc_auc"] <= 1
    by_class = s["far_at_tar95_by_unknown_class"]  # 1 of 3 classes left out in each of 3 trials
    assert set(by_class) <= {"paper", "rock", "scissors"} and all(0 <= v <= 1 for vs in by_class.values() for v in vs)
    for name in ("confusion.png", "scores.png", "embeddings.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((report / "summary.json").read_text())  # what --json printed, bar the report's own files
    assert saved == {k: v for k, v in s.items() if k != "report"} and saved["model"] == s["model"] and "data" in saved
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_holdout_takes_whole_datasets():
    from pathlib import Path

    from byakugan.embedder.training.data import Sample, split_classes

    samples = [Sample(Path(f"{d}/{c}.jpg"), f"{d}/{c}", d) for d in ("a", "b") for c in ("x", "y")]
    train, held = split_classes(samples, ["b", "a/x"])
    assert [s.label for s in train] == ["a/y"] and [s.label for s in held] == ["a/x", "b/x", "b/y"]
    with pytest.raises(embedder.ByakuganError, match=r"held-out classes \['c'\] not found"):
        split_classes(samples, ["c"])


def test_fine_tuning_moves_the_backbone_and_validates_on_its_new_features(datasets, tmp_path, monkeypatch):
    import torch

    from byakugan.embedder.training import metric as training
    from byakugan.embedder.training.metric import TrainConfig, train

    held_passes = []
    real = training.features

    def spy(model, samples, *args, **kwargs):
        held_passes.append(len(samples))
        return real(model, samples, *args, **kwargs)

    monkeypatch.setattr(training, "features", spy)
    logs = []
    cfg = TrainConfig(data=[str(datasets / "rock-paper-scissors")], out=str(tmp_path / "ft"), per_class=6, epochs=2,
                      head_dim=8, batch_size=12, backbone_lr=1e-3, holdout=["rock-paper-scissors/rock"], size=96)
    model = train(cfg, log=logs.append)
    before = embedder.create_embedder("efficientnet_lite0").backbone.state_dict()
    after = model.backbone.state_dict()
    moved = {k for k in before if before[k].is_floating_point() and not torch.allclose(before[k], after[k])}
    # every stage learns (the earlier at 0.3 of the rate), BatchNorm statistics stay ImageNet's
    assert {"conv_stem.weight", "blocks.0.0.conv_dw.weight", "blocks.6.0.conv_pw.weight", "conv_head.weight"} <= moved
    assert not [k for k in moved if k.endswith(("running_mean", "running_var"))]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ft" / "checkpoint" / "optimizer.safetensors"), "pt") as f:
        rates = [g["lr"] for g in json.loads(f.metadata()["param_groups"])]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 3e-4])  # head, loss, last two stages, the stages before
    history = json.loads((tmp_path / "ft" / "training.json").read_text())["history"]
    # Held-out figures come from each epoch's backbone, so they are allowed to change between epochs.
    assert all("heldout_precision_at_1" in h for h in history) and len(history) == 2
    assert held_passes == [6, 6, 6]  # the held-out class before training and after each epoch


def test_colour_jitter_can_be_left_out_of_augmentation():
    from torchvision.transforms import v2

    from byakugan.embedder.training.metric import augmentation

    kinds = lambda aug: {type(t) for t in aug.transforms}  # noqa: E731
    assert {v2.ColorJitter, v2.RandomGrayscale} <= kinds(augmentation(64, hflip=False))
    assert not {v2.ColorJitter, v2.RandomGrayscale} & kinds(augmentation(64, hflip=False, colour_jitter=False))
    assert v2.RandomHorizontalFlip in kinds(augmentation(64, hflip=True, colour_jitter=False))


def test_the_share_of_grey_views_is_a_checked_setting(tmp_path):
    from torchvision.transforms import v2

    from byakugan.embedder.training.metric import TrainConfig, augmentation

    grey = [t.p for t in augmentation(64, hflip=False, grey=0.3).transforms if isinstance(t, v2.RandomGrayscale)]
    assert grey == [0.3] and TrainConfig(data=[], out="x").grey_views == 0.05
    with pytest.raises(embedder.ByakuganError, match="grey views -0.1 must be >= 0"):
        TrainConfig(data=[], out=str(tmp_path / "m"), grey_views=-0.1).check()


def test_the_cohort_can_come_from_some_of_the_training_folders(datasets, tmp_path):
    """cohort_data: classes trained on as instances (one image each) are no impostor identities."""
    from byakugan.embedder.training.metric import TrainConfig, train

    cfg = TrainConfig(data=[str(datasets / "rock-paper-scissors"), str(datasets / "hand-fingers")],
                      out=str(tmp_path / "m"), per_class=4, epochs=1, head_dim=8, batch_size=12, views=1, size=64,
                      cohort_top=2, cohort_per_class=2, cohort_data=[str(datasets / "rock-paper-scissors")])
    model = train(cfg, log=lambda m: None)
    classes = [p for p in (datasets / "rock-paper-scissors").iterdir() if p.is_dir()]
    assert model.cohort is not None and len(model.cohort) == len(classes)


def test_a_fine_tune_trains_the_head_alone_first_and_splits_the_backbone_at_its_last_two_stages(datasets, tmp_path,
                                                                                                 monkeypatch):
    import timm
    import torch

    from byakugan.embedder.training.metric import TrainConfig, train
    from byakugan.embedder.training.stages import backbone_parts

    net = embedder.create_embedder("efficientnet_lite0", pretrained=False).backbone
    late, early = backbone_parts(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert names[id(late[0])].startswith("blocks.5.") and names[id(early[-1])].startswith("blocks.4.")
    assert {names[id(p)].split(".")[0] for p in late} == {"blocks", "conv_head", "bn2"} and len(late) + len(early) == len(names)
    for name, start in (("resnet18", "layer3."), ("convnext_atto", "stages.2.")):
        other = timm.create_model(name, pretrained=False, num_classes=0)
        late, early = backbone_parts(other)
        assert next(n for n, p in other.named_parameters() if p is late[0]).startswith(start) and early
    tapped = embedder.create_embedder("efficientnet_lite0", pretrained=False, taps=[3]).backbone  # --taps wraps it
    late, _ = backbone_parts(tapped)
    assert next(n for n, p in tapped.named_parameters() if p is late[0]).startswith("net.blocks.5.")
    from byakugan.embedder.training import metric

    seen, save = {}, metric.save_checkpoint

    def spy(model, opt, epoch, *args):
        seen[epoch] = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        return save(model, opt, epoch, *args)

    monkeypatch.setattr(metric, "save_checkpoint", spy)
    cfg = TrainConfig(data=[str(datasets / "rock-paper-scissors")], out=str(tmp_path / "m"), per_class=4, epochs=2,
                      head_dim=8, batch_size=8, backbone_lr=1e-3, size=96)
    train(cfg, log=lambda m: None)
    before = embedder.create_embedder("efficientnet_lite0").backbone.state_dict()
    assert all(torch.equal(before[k], seen[1][k]) for k in before)  # the first epoch, the head's own
    assert not all(torch.equal(before[k], seen[2][k]) for k in before)
    with pytest.raises(embedder.ByakuganError, match="head epochs 2 with epochs 2: no epoch would fine-tune"):
        TrainConfig(data=[], out=str(tmp_path / "x"), backbone_lr=1e-3, epochs=2, head_epochs=2).check()
    with pytest.raises(embedder.ByakuganError, match="early lr: only for a fine-tune"):
        TrainConfig(data=[], out=str(tmp_path / "x"), early_lr=1e-4).check()
    with pytest.raises(embedder.ByakuganError, match="early lr -1.0 must be >= 0"):
        TrainConfig(data=[], out=str(tmp_path / "x"), backbone_lr=1e-3, early_lr=-1.0).check()
    with pytest.raises(embedder.ByakuganError, match="head epochs 0.5 must be >= 0, a whole number"):
        TrainConfig(data=[], out=str(tmp_path / "x"), backbone_lr=1e-3, head_epochs=0.5).check()
