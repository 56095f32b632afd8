"""Cohort score normalisation (embedder.scoring.cohort): offsets, model files, galleries, bundles, evaluation."""

import json
import shutil

import numpy as np
import pytest

import byakugan.embedder as embedder
from byakugan.embedder.scoring.cohort import COHORT_FILE, offsets
from byakugan.embedder.errors import ByakuganError, ModelError
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.embedding.model import Embedder
from byakugan.embedder.preprocess import Preprocess
from byakugan.index import Gallery, Pipeline
from byakugan.index.bundle import load as load_bundle
from byakugan.index.errors import GalleryError
from byakugan.index.export import export

from .conftest import heldout_anime, new_gallery, unit_rows


def test_offsets_are_the_mean_of_the_top_cohort_cosines():
    q, c = unit_rows(4, 8, seed=1), unit_rows(6, 8, seed=2)
    cos = q @ c.T
    np.testing.assert_allclose(offsets(q, c, 0), cos.mean(1), atol=1e-6)
    np.testing.assert_allclose(offsets(q, c, 2), np.sort(cos, 1)[:, -2:].mean(1), atol=1e-6)
    np.testing.assert_allclose(offsets(q, c, 99), cos.mean(1), atol=1e-6)  # more than there are: all


@pytest.fixture()
def cohort_model(tmp_path):
    m = embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="coh")
    plain = embedder.load(m.save(tmp_path / "plain"))[0].fingerprint()  # (saved in fp16)
    m.cohort, m.config["cohort"] = unit_rows(5, m.dim, seed=3), {"top": 2}
    loaded, _ = embedder.load(m.save(tmp_path / "m"))
    assert loaded.fingerprint() == plain  # a cohort does not change the vectors: galleries still fit
    np.testing.assert_array_equal(loaded.cohort, m.cohort)
    return loaded


def test_bad_or_missing_cohort_is_refused_in_one_line(cohort_model, tmp_path):
    with pytest.raises(ByakuganError, match=r"cohort settings \{'top': -1\}: must be"):
        Embedder(cohort_model.backbone, dict(cohort_model.config, cohort={"top": -1}))
    (tmp_path / "m" / COHORT_FILE).unlink()
    with pytest.raises(ModelError, match=f"{COHORT_FILE}: missing"):
        embedder.load(tmp_path / "m")
    (tmp_path / "m" / COHORT_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="not a readable cohort file"):
        embedder.load(tmp_path / "m")


def test_gallery_scores_are_cosines_less_the_cohort_offset(cohort_model, tiny_images, tmp_path):
    refs = unit_rows(6, cohort_model.dim, seed=4)
    queries = unit_rows(3, cohort_model.dim, seed=5)
    pipe, g = new_gallery(cohort_model, tmp_path / "g", threshold=0.1)
    plain_pipe, plain = new_gallery(embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="p"))
    for gal in (g, plain):
        gal.enroll("a", refs[:3])
        gal.enroll("b", refs[3:])
    off = offsets(queries, cohort_model.cohort, 2)
    got, raw = pipe.search(g, queries, k=2), plain_pipe.search(plain, queries, k=2)
    for r, w, o in zip(got, raw, off):
        assert [h.id for h in r.hits] == [h.id for h in w.hits] and [lab for lab, _ in r.labels] == [lab for lab, _ in w.labels]
        np.testing.assert_allclose([h.score for h in r.hits], [h.score - o for h in w.hits], atol=1e-6)
    g.save()
    assert (tmp_path / "g" / COHORT_FILE).is_file() and Gallery.open(tmp_path / "g").cohort_settings["top"] == 2
    again = pipe.search(Gallery.open(tmp_path / "g"), queries, k=2)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in got]
    # saved elsewhere, the cohort goes along
    Gallery.open(tmp_path / "g").save(tmp_path / "copy")
    assert [r.to_dict() for r in pipe.search(Gallery.open(tmp_path / "copy"), queries, k=2)] == [r.to_dict() for r in got]
    # the bundle applies the same offsets to its scores
    _, g2 = new_gallery(cohort_model, tmp_path / "g2")
    pipe.enroll(g2, "red", tiny_images[:1])
    pipe.enroll(g2, "green", tiny_images[1:2])
    b = load_bundle(export(g2, tmp_path / "b.zip", pipeline=pipe))
    for q in tiny_images:
        ours, theirs = pipe.search(g2, [q], k=2)[0], b.search(q, k=2)[0]
        np.testing.assert_allclose([h["score"] for h in theirs["hits"]], [h.score for h in ours.hits], atol=1e-5)


def test_damaged_gallery_cohort_and_fused_landmarks_are_refused(cohort_model, tmp_path):
    pipe, g = new_gallery(cohort_model, tmp_path / "g")
    g.enroll("a", unit_rows(2, cohort_model.dim))
    g.save()
    (tmp_path / "g" / COHORT_FILE).unlink()
    with pytest.raises(ByakuganError, match=f"{COHORT_FILE}: missing"):
        pipe.search(Gallery.open(tmp_path / "g"), unit_rows(1, cohort_model.dim))
    shutil.copyfile(tmp_path / "m" / COHORT_FILE, tmp_path / "g" / COHORT_FILE)
    pipe.search(Gallery.open(tmp_path / "g"), unit_rows(1, cohort_model.dim))  # the same vectors: fine again
    cohort_model.cohort = cohort_model.cohort[::-1].copy()
    new_gallery(cohort_model, tmp_path / "h")[1].save()
    shutil.copyfile(tmp_path / "h" / COHORT_FILE, tmp_path / "g" / COHORT_FILE)
    with pytest.raises(GalleryError, match="does not match its checksum"):
        pipe.search(Gallery.open(tmp_path / "g"), unit_rows(1, cohort_model.dim))
    with pytest.raises(GalleryError, match="normalises scores by a cohort"):
        new_gallery(cohort_model, tmp_path / "f", detector="hand", landmarks="hand-landmarks")


def test_a_constant_offset_moves_thresholds_not_rejection():
    rng = np.random.default_rng(0)
    centres = unit_rows(4, 16, seed=6)
    emb = centres.repeat(12, 0) + 0.3 * rng.standard_normal((48, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat(list("abcd"), 12)
    plain = enrolment_trials(emb, labels, trials=5, unknown_fraction=0.25).summary
    moved = enrolment_trials(emb, labels, trials=5, unknown_fraction=0.25, offset=np.full(48, 0.25)).summary
    assert moved["threshold_tar95"] == pytest.approx(plain["threshold_tar95"] - 0.25, abs=1e-4)
    assert moved["far_at_tar95"] == plain["far_at_tar95"] and moved["top1_nearest"] == plain["top1_nearest"]


def test_anime_cohort_accepts_fewer_unseen_characters(datasets):
    """The 4 characters the anime model never saw: one left out of the gallery in each trial."""
    files, labels = heldout_anime(datasets, 40)
    model = embedder.load("anime")[0]
    assert model.config["cohort"] == {"top": 5} and model.cohort.shape == (27, model.dim)
    emb = model.embed(files)
    kw = dict(shots=5, trials=20, unknown_fraction=0.25, seed=0)
    raw = enrolment_trials(emb, labels, **kw).summary
    normalised = enrolment_trials(emb, labels, **kw, offset=model.cohort_offsets(emb)).summary
    assert normalised["far_at_tar95_mean"] < raw["far_at_tar95_mean"] - 0.05, (raw, normalised)


def test_a_gallery_made_before_the_model_had_a_cohort_keeps_raw_cosines(cohort_model, tmp_path):
    old_model = embedder.load(tmp_path / "plain")[0]  # the same weights, saved without a cohort
    refs, queries = unit_rows(4, old_model.dim, seed=7), unit_rows(2, old_model.dim, seed=8)
    old_pipe, g = new_gallery(old_model, tmp_path / "old")
    g.enroll("a", refs[:2])
    g.enroll("b", refs[2:])
    g.save()
    before = [r.to_dict() for r in old_pipe.search(g, queries, k=2)]
    reopened = Gallery.open(tmp_path / "old")
    pipe = Pipeline.for_gallery(reopened, model=cohort_model)  # same fingerprint: accepted
    assert reopened.cohort is None and [r.to_dict() for r in pipe.search(reopened, queries, k=2)] == before
    assert not (tmp_path / "old" / COHORT_FILE).exists()


def test_evaluate_uses_the_models_cohort_unless_told_not_to(datasets, capsys):
    from byakugan.ui.cli import main

    args = ["evaluate", str(datasets / "anime-faces"), "--classes", "ame", "ceci", "fauna", "irys", "--per-class", "8",
            "--trials", "2", "--unknown-fraction", "0.25", "--model", "anime", "--json"]
    assert main(args) == 0
    normalised = json.loads(capsys.readouterr().out)
    assert main([*args, "--no-cohort"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert normalised["cohort"] == {"top": 5, "size": 27} and "cohort" not in raw
    assert normalised["top1_prototype"] == raw["top1_prototype"]  # the ranking is the same
    assert normalised["threshold_tar95_mean"] < raw["threshold_tar95_mean"] - 0.3  # scores are not cosines


def test_score_histogram_holds_normalised_scores_too():
    from byakugan.embedder.evaluation.report import score_bins

    cosines = score_bins(np.array([0.4, 0.95]), np.array([0.3]))
    assert 0.25 < cosines[0] <= 0.3 and 0.95 <= cosines[-1] < 1.0  # the scores' own range, not stretched to 0
    normalised = score_bins(np.array([-0.45, 0.1]), np.array([-0.6, 0.05]))
    assert normalised[0] <= -0.6 and normalised[-1] >= 0.1 and len(normalised) == 61
    one = score_bins(np.array([0.9, 0.9]), np.zeros(0))
    assert one[0] < 0.86 and one[-1] > 0.94  # one value: a readable width around it
