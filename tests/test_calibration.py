"""Calibrated confidence: the fit, a gallery's own evidence, the same answer everywhere."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byakugan.embedder.scoring.calibration import Calibration, centred, fit
from byakugan.index import Gallery, Pipeline
from byakugan.index.bundle import load
from byakugan.index.confidence import evidence
from byakugan.index.export import export
from byakugan.ui.cli import main


def test_fit_reads_true_matches_high_and_strangers_low():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.8, 0.05, 200), rng.normal(0.5, 0.08, 200)
    cal = fit(genuine, impostor, threshold=0.6)
    assert cal.fitted and cal.slope > 0 and (cal.genuine, cal.impostor) == (200, 200)
    assert cal.confidence(0.8) > 0.9 and cal.confidence(0.5) < 0.1
    assert 0.6 < cal.score_at(0.5) < 0.7  # where the two sets cross


def test_strangers_passing_counts_the_best_other_class_scores_at_or_above_a_threshold():
    cal = fit(np.asarray([0.9, 0.8, 0.85, 0.7]), np.asarray([0.1, 0.2, 0.3, 0.4]), threshold=0.5)
    assert cal.strangers == (0.1, 0.2, 0.3, 0.4)
    assert [cal.strangers_passing(t) for t in (0.05, 0.2, 0.25, 0.4, 0.41)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert fit(np.asarray([0.9]), np.asarray([0.3]), threshold=0.5).strangers_passing(0.3) == 1.0  # unfitted: still told
    assert fit(np.asarray([0.9, 0.8]), np.zeros(0), threshold=0.5).strangers_passing(0.3) is None


def test_too_little_evidence_centres_on_the_threshold():
    for genuine, impostor in [([], [0.1, 0.2]), ([0.9], [0.1]), ([0.9, 0.8], [])]:
        cal = fit(np.asarray(genuine), np.asarray(impostor), threshold=0.42)
        assert not cal.fitted and cal.confidence(0.42) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        centred(0.3).score_at(1.0)


def test_an_unfitted_calibration_says_what_the_references_lack():
    assert fit(np.asarray([0.9, 0.8]), np.asarray([]), threshold=0.5).reason == "needs 2 classes, and another class found near the references"
    assert "has 1: a class with 2+ references that are not near-copies" in fit(np.asarray([0.9]), np.asarray([0.1]), 0.5).reason
    inverted = fit(np.asarray([0.1, 0.2, 0.15]), np.asarray([0.9, 0.8, 0.85]), threshold=0.5)
    assert not inverted.fitted and "do not tell the classes apart" in inverted.reason
    assert fit(np.asarray([0.9, 0.8]), np.asarray([0.1]), threshold=0.5).reason == ""


def test_the_automatic_threshold_stops_where_strangers_stop():
    rng = np.random.default_rng(1)
    varied, strangers = rng.normal(0.8, 0.05, 40), rng.normal(0.55, 0.08, 40)
    strangers[0] = 0.78  # the best stranger reaches into the true matches: their own 95% point
    cal = fit(varied, strangers, threshold=0.6)
    assert cal.auto_threshold == pytest.approx(np.quantile(varied, 0.05)) and not cal.held
    bursts = rng.normal(0.96, 0.005, 40)  # shots of one pose a moment apart agree more than later queries will
    cal = fit(bursts, strangers, threshold=0.6)
    assert cal.held and cal.auto_threshold == pytest.approx(0.78) and 0.78 < np.quantile(bursts, 0.05)
    cal = fit(bursts, strangers, threshold=0.9)  # never below the stored threshold on that account
    assert cal.held and cal.auto_threshold == 0.9
    low = fit(varied - 0.3, strangers - 0.3, threshold=0.6)  # a new source scoring low: it comes down freely
    assert not low.held and low.auto_threshold == pytest.approx(np.quantile(varied - 0.3, 0.05)) and low.auto_threshold < 0.6


def test_a_gallery_of_near_copies_is_not_calibrated_and_says_why(model, digits, tmp_path):
    from byakugan.embedder import load_image

    from .conftest import new_gallery

    pipe, g = new_gallery(model, tmp_path / "g")
    for label in ("1", "2"):  # each class one picture three times: no true-match evidence at all
        pipe.enroll(g, label, [load_image(digits[label][0])] * 3)
    cal = pipe.calibration(g)
    assert not cal.fitted and "not near-copies" in cal.reason


@settings(max_examples=60, deadline=None)
@given(st.floats(0.5, 200), st.floats(-50, 50), st.floats(0.01, 0.99))
def test_score_at_inverts_confidence(slope, intercept, p):
    cal = Calibration(slope, intercept, True)
    assert cal.confidence(cal.score_at(p)) == pytest.approx(p, abs=1e-6)


def _gallery(vectors, labels, scoring="nearest"):
    from byakugan.index.settings import GallerySettings

    g = Gallery.create(GallerySettings({"name": "t", "fingerprint": "f", "dim": vectors.shape[1]}, {"name": "none"}, 0.5,
                                       scoring))
    for label in dict.fromkeys(labels):
        g.enroll(label, vectors[[i for i, lab in enumerate(labels) if lab == label]])
    return g


@pytest.mark.parametrize("scoring", ["nearest", "mean"])
def test_evidence_leaves_each_reference_out_of_its_own_class(scoring):
    # Two tight classes far apart; "c" has one reference, so it gives a stranger score but no true one.
    rng = np.random.default_rng(1)
    base = np.eye(8, dtype=np.float32)
    rows, labels = [], []
    for label, axis, n in [("a", 0, 4), ("b", 1, 4), ("c", 2, 1)]:
        v = base[axis] + 0.15 * rng.standard_normal((n, 8)).astype(np.float32)
        rows.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        labels += [label] * n
    g = _gallery(np.concatenate(rows), labels, scoring)
    genuine, impostor = evidence(g, lambda v: (v, None))
    assert len(genuine) == 8 and len(impostor) == 9
    assert genuine.min() > 0.6 and impostor.max() < 0.5
    assert genuine.max() < 0.98  # a reference never scores against itself
    # near-copies (a burst of camera shots) are no evidence of a true match either
    g = _gallery(np.concatenate([rows[0], rows[0] + 1e-4, rows[1]]), ["a"] * 8 + ["b"] * 4, scoring)
    genuine, _ = evidence(g, lambda v: (v, None))
    assert len(genuine) == 12 and genuine.max() < 0.98


def test_gallery_confidence_is_the_same_live_in_json_and_in_the_bundle(digit_gallery, digits, tmp_path, capsys):
    g = Gallery.open(digit_gallery)
    pipe = Pipeline.for_gallery(g)
    cal = pipe.calibration(g)
    assert cal.fitted and cal.genuine == 15 and cal.impostor == 15
    assert pipe.calibration(g) is cal  # worked out once per state of the gallery
    live = pipe.recognize(g, digits["3"][9], k=3)[0]
    assert live.match.confidence == pytest.approx(cal.confidence(live.match.score), abs=1e-4)
    # a new gallery's threshold is its own: the score that keeps 95% of its references' true-match scores
    assert g.threshold_auto and pipe.threshold(g) == cal.auto_threshold != g.threshold
    assert live.match.threshold == cal.auto_threshold
    assert live.match.threshold_confidence == pytest.approx(cal.confidence(cal.auto_threshold), abs=1e-4)
    b = load(export(g, tmp_path / "b.zip"))
    assert b.threshold == pytest.approx(cal.auto_threshold)
    got = b.search(digits["3"][9], k=3)[0]
    assert got["match"]["confidence"] == pytest.approx(live.match.confidence, abs=1e-4)
    assert [e["confidence"] for e in got["labels"]] == pytest.approx([cal.confidence(s) for _, s in live.labels], abs=1e-4)
    assert main(["search", str(digit_gallery), str(digits["3"][9]), "--json", "--k", "3"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]["detections"][0]
    assert cli["match"]["confidence"] == pytest.approx(live.match.confidence, abs=1e-4)
    assert cli["found"] is True and cli["match"]["cosine"] == pytest.approx(cli["match"]["score"], abs=1e-6)
    assert cli["match"]["calibrated"] is True and got["match"]["calibrated"] is True


def test_search_says_when_its_confidence_is_not_calibrated_yet(model, digits, tmp_path, capsys):
    """One class gives no stranger's evidence: the curve is centred on the threshold, and the answer says so."""
    from .conftest import new_gallery

    pipe, g = new_gallery(model, tmp_path / "g")
    pipe.enroll(g, "1", digits["1"][:3])
    g.save()
    assert main(["search", str(tmp_path / "g"), str(digits["1"][5]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["detections"][0]["match"]["calibrated"] is False
    assert main(["search", str(tmp_path / "g"), str(digits["1"][5])]) == 0
    assert "; confidence not calibrated yet: 50% is the threshold)" in capsys.readouterr().out.splitlines()[0]


def test_calibration_follows_edits(digit_gallery, digits, tmp_path):
    import shutil

    path = shutil.copytree(digit_gallery, tmp_path / "g")
    g = Gallery.open(path)
    pipe = Pipeline.for_gallery(g)
    before = pipe.calibration(g)
    pipe.enroll(g, "9", digits["9"][:3])
    after = pipe.calibration(g)
    assert after is not before and after.genuine == 18
    g.remove("9")
    assert pipe.calibration(g).genuine == 15


def test_search_with_nothing_detected_says_so_and_answers(tmp_path, digits, capsys):
    g = tmp_path / "g"
    assert main(["enroll", str(g), "3", *map(str, digits["3"][:3]), "--detector", "anime-face", "--fallback", "whole"]) == 0
    capsys.readouterr()
    assert main(["search", str(g), str(digits["3"][9]), "--json"]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)[0]["detections"]
    assert len(d) == 1 and d[0]["found"] is False and d[0]["match"]["nearest"] == "3"
    assert "no anime-face found; searched the whole image" in err
    assert main(["search", str(g), str(digits["3"][9]), "--json", "--fallback", "none"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["detections"] == [] and "no anime-face found" in err


def test_store_vectors_unchanged_by_calibration(digit_gallery):
    g = Gallery.open(digit_gallery)
    before = g.embeddings([r.id for r in g.references()]).copy()
    Pipeline.for_gallery(g).calibration(g)
    np.testing.assert_array_equal(g.embeddings([r.id for r in g.references()]), before)


def test_threshold_auto_or_fixed_from_the_cli(digit_gallery, tmp_path, capsys):
    import shutil

    path = shutil.copytree(digit_gallery, tmp_path / "g")
    g = Gallery.open(path)
    auto = Pipeline.for_gallery(g).threshold(g)
    assert main(["threshold", str(path)]) == 0
    out, err = capsys.readouterr()
    assert float(out) == pytest.approx(auto, abs=1e-6) and "keeps 95% of the 15 true-match scores" in err
    # These digits' classes are far apart: their own 95% point lies above every other class's best score.
    assert "held down to the best score a reference reaches against another class" in err
    import dataclasses

    real = Pipeline.calibration
    with pytest.MonkeyPatch.context() as mp:  # as a gallery whose classes overlap calibrates
        mp.setattr(Pipeline, "calibration", lambda self, g: dataclasses.replace(real(self, g), held=False))
        assert main(["threshold", str(path)]) == 0
    assert "held" not in capsys.readouterr().err
    assert main(["threshold", str(path), "0.7"]) == 0
    assert not Gallery.open(path).threshold_auto and Gallery.open(path).threshold == 0.7
    capsys.readouterr()
    assert main(["threshold", str(path)]) == 0
    out, err = capsys.readouterr()
    cal = Pipeline.for_gallery(g).calibration(g)
    assert out.strip() == "0.7" and f"{cal.strangers_passing(0.7):.0%} of the references' best scores against" in err
    # A threshold every reference's best other class reaches says that it names most strangers.
    assert main(["threshold", str(path), str(round(min(cal.strangers) - 0.01, 4))]) == 0
    capsys.readouterr()
    assert main(["threshold", str(path)]) == 0 and "100% of the references' best" in (err := capsys.readouterr().err)
    assert "that is most of them" in err
    assert main(["labels", str(path), "--json"]) == 0 and json.loads(capsys.readouterr().out)["strangers_passing"] == 1.0
    assert main(["threshold", str(path), "auto"]) == 0 and Gallery.open(path).threshold_auto
    with pytest.raises(SystemExit) as exc:
        main(["threshold", str(path), "high"])
    assert exc.value.code == 2 and "'high' is not a number or 'auto'" in capsys.readouterr().err


def test_a_threshold_given_at_creation_is_fixed(model, tmp_path):
    from .conftest import new_gallery

    assert not new_gallery(model, tmp_path / "a", threshold=0.5)[1].threshold_auto
    assert new_gallery(model, tmp_path / "b")[1].threshold_auto


def test_confidence_threshold_needs_a_calibrated_gallery(digit_gallery, tmp_path):
    # Uncalibrated, the curve is centred on the threshold itself: setting 80% would move the
    # threshold, re-centre the curve and read 50% again, creeping up at every save.
    import shutil

    from byakugan.index import GalleryError
    from byakugan.index.service import GalleryService

    path = shutil.copytree(digit_gallery, tmp_path / "g")
    svc = GalleryService(path)
    svc.remove("3")
    svc.remove("7")
    before = svc.gallery().threshold
    with pytest.raises(GalleryError, match="not calibrated yet"):
        svc.set_threshold_confidence(0.8)
    assert svc.gallery().threshold == before


def test_a_blank_picture_is_answered_unknown_and_says_why(digit_gallery, capsys):
    """One flat colour holds nothing to tell a class by: whatever it scores, it is no one (enrolment warns of it too)."""
    from PIL import Image

    g = Gallery.open(digit_gallery)
    flat = Image.new("RGB", (160, 160), (0, 0, 0))
    got = Pipeline.for_gallery(g).recognize(g, flat, threshold=-1.0)[0]  # any score would pass this threshold
    assert got.match.label == "unknown" and got.match.nearest in g.labels() and got.blank == "one flat colour, nothing to tell a class by"
    assert got.to_dict()["blank"] == got.blank and got.to_dict()["match"]["known"] is False
    real = Pipeline.for_gallery(g).recognize(g, Image.effect_noise((160, 160), 60).convert("RGB"), threshold=-1.0)[0]
    assert real.match.known and real.blank is None and "blank" not in real.to_dict()
