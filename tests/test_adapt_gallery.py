"""A gallery whose label scores are adapted to its classes (embedder.scoring.adapt): it scores as the
benchmark's formula does, keeps XᵀX through every edit, saves and opens with it, calibrates with each
reference left out of the fit, exports it to bundles; new hand galleries take it from their model."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.scoring.adapt import Adaptation
from byakugan.index import Gallery, Pipeline, ranking
from byakugan.index.confidence import evidence
from byakugan.index.means import ClassMeans
from tests.conftest import new_gallery

A = Adaptation(0.3, 0.03)
SIZES = {"a": 3, "b": 5, "c": 1, "d": 4}


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def settings(model):
    pipe, _ = new_gallery(model)
    return pipe.settings()


def made(settings, path=None, scoring=None, seed=0):
    g = Gallery.create(dataclasses.replace(settings, adapt=A.to_dict(), scoring=scoring), path)
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(len(SIZES), g.dim)))
    for c, (label, n) in zip(centres, SIZES.items()):
        g.enroll(label, unit(c + 0.9 * rng.normal(size=(n, g.dim)) / np.sqrt(g.dim) * 8))
    return g, rng, centres


def expected(g, Q, scoring):
    """The benchmark's scores: each class's nearest reference (or unit mean) plus A's term."""
    labels = sorted(g.labels())
    R = np.stack([g.embeddings([r.id for r in g.references(lab)]).mean(0) for lab in labels])
    X = g.embeddings([r.id for r in g.references()])
    owner = np.array([r.label for r in g.references()])
    groups = [np.flatnonzero(owner == lab) for lab in labels]
    base = np.stack([(Q @ X[grp].T).max(1) for grp in groups], 1) if scoring == "nearest" else Q @ unit(R).T
    return labels, base + A.terms(Q, X, groups)


@pytest.mark.parametrize("scoring", ["nearest", "mean"])
def test_labels_score_as_the_benchmark_formula_and_survive_save_and_open(settings, tmp_path, scoring):
    g, rng, centres = made(settings, tmp_path / "g", scoring)
    Q = unit(centres[[0, 1, 3]] + rng.normal(size=(3, g.dim)) / np.sqrt(g.dim) * 6)
    labels, S = expected(g, Q, scoring)
    for results in (g.search(Q, k=4), None):
        if results is None:  # saved, opened again, searched again: the same
            g.save()
            results = Gallery.open(tmp_path / "g").search(Q, k=4)
        for q, r in enumerate(results):
            want = sorted(zip(labels, S[q]), key=lambda ls: -ls[1])
            assert [lab for lab, _ in r.labels] == [lab for lab, _ in want]
            np.testing.assert_allclose([s for _, s in r.labels], [s for _, s in want], atol=2e-5)
    assert Gallery.open(tmp_path / "g").adapt == A.to_dict()


def test_every_edit_keeps_xtx_as_a_fresh_count_gives(settings):
    g, rng, _ = made(settings)
    g.search(unit(rng.normal(size=(1, g.dim))))  # made now, then kept by the edits below
    g.enroll("e", unit(rng.normal(size=(2, g.dim))))
    g.remove_reference(g.references("b")[0].id)
    g.remove("c")
    g.rename("a", "z")
    fresh = ClassMeans.of(g.vectors, {r.id: r for r in g.references()}, gram=True)
    np.testing.assert_allclose(g.means().gram, fresh.gram, atol=1e-9)
    assert g.means().directions(A)[0] == fresh.directions(A)[0] == ["b", "d", "e", "z"]
    np.testing.assert_allclose(g.means().directions(A)[1], fresh.directions(A)[1], atol=1e-5)


def test_turned_off_it_scores_as_before(settings):
    g, rng, _ = made(settings)
    Q = unit(rng.normal(size=(2, g.dim)))
    adapted = g.search(Q, k=3)
    g.adapt = None
    plain = g.search(Q, k=3)
    assert [r.labels for r in plain] != [r.labels for r in adapted]
    assert plain[0].labels[0][1] == pytest.approx(max(h.score for h in plain[0].hits))


def test_queries_asked_a_few_at_a_time_answer_as_all_at_once(settings, monkeypatch):
    g, rng, _ = made(settings)
    Q = unit(rng.normal(size=(7, g.dim)))
    whole = g.search(Q, k=3)
    monkeypatch.setattr(ranking, "RESULTS_PER_REQUEST", 30)  # two queries a request
    assert [(r.hits, r.labels) for r in g.search(Q, k=3)] == [(r.hits, r.labels) for r in whole]


def test_a_big_gallery_ranks_the_labels_an_unadapted_search_finds(settings, monkeypatch):
    g, rng, centres = made(settings)
    Q = unit(centres + rng.normal(size=centres.shape) / np.sqrt(g.dim) * 6)
    exact = g.search(Q, k=2)
    monkeypatch.setattr(ranking, "EXACT_ADAPTED", 3)  # as if it held more than can be scored whole
    approx = g.search(Q, k=2)
    assert [r.labels[0][0] for r in approx] == [r.labels[0][0] for r in exact]
    np.testing.assert_allclose([r.labels[0][1] for r in approx], [r.labels[0][1] for r in exact], atol=2e-5)


@pytest.mark.parametrize("scoring", ["nearest", "mean"])
@pytest.mark.parametrize("exact", [True, False])
def test_a_match_tells_the_best_labels_plain_cosine(settings, monkeypatch, scoring, exact):
    """Match.cosine (`search --json`'s "cosine") was the adapted score, past 1 at times: it is the
    best label's score with adaptation and cohort normalisation both taken off."""
    g, rng, centres = made(settings, scoring=scoring)
    Q = unit(centres + rng.normal(size=centres.shape) / np.sqrt(g.dim) * 6)
    if not exact:
        monkeypatch.setattr(ranking, "EXACT_ADAPTED", 3)  # as if it held more than can be scored whole
    offset = rng.normal(size=len(Q)) * 0.1
    adapted = [g.match(r) for r in g.search(Q, k=4, offset=offset)]
    g.adapt = None
    plain = [dict(r.labels) for r in g.search(Q, k=4)]
    assert any(m.score + o > p[m.nearest] + 0.01 for m, o, p in zip(adapted, offset, plain))  # adaptation moved them
    np.testing.assert_allclose([m.cosine for m in adapted], [p[m.nearest] for m, p in zip(adapted, plain)], atol=2e-5)


def test_calibration_leaves_each_reference_out_of_the_fit_too(settings):
    g, _, _ = made(settings)
    genuine, impostor = evidence(g, lambda v: (v, None))
    want_genuine, want_impostor = [], []
    refs = g.references()
    for r in sorted(refs, key=lambda r: (r.label, r.id)):  # each scored as a gallery without it would score it
        rest = [o for o in refs if o.id != r.id]
        X = g.embeddings([o.id for o in rest])
        owner = np.array([o.label for o in rest])
        names = sorted(set(owner))
        q = g.embeddings([r.id])[0]
        scores = {n: float((q @ X[owner == n].T).max() + q @ A.fit(X, [np.flatnonzero(owner == m) for m in names])[j])
                  for j, n in enumerate(names)}
        if r.label in scores:
            want_genuine.append(scores[r.label])
        want_impostor.append(max(s for n, s in scores.items() if n != r.label))
    np.testing.assert_allclose(genuine, want_genuine, atol=2e-5)
    np.testing.assert_allclose(sorted(impostor), sorted(want_impostor), atol=2e-5)


@pytest.mark.parametrize("scoring", ["nearest", "mean"])
def test_a_cohort_in_the_fit_moves_searches_calibration_and_trials_alike(settings, tmp_path, scoring):
    """adapt "cohort": the gallery's cohort joins the fit (embedder.scoring.adapt) wherever scores are
    adapted: each label's score moves by the query's product with the change of its direction, the
    calibration's left-out terms are those of a fit with the cohort, and a saved gallery keeps it."""
    rng = np.random.default_rng(7)
    C = unit(rng.normal(size=(40, settings.dim)))
    with_cohort = dataclasses.replace(settings, cohort=C, cohort_top=5)
    plain, _, centres = made(with_cohort, scoring=scoring)
    g, _, _ = made(with_cohort, tmp_path / "g", scoring)
    g.adapt = A.to_dict() | {"cohort": 30.0}
    g.save()
    g = Gallery.open(tmp_path / "g")
    assert g.adapt == {"weight": 0.3, "ridge": 0.03, "cohort": 30.0}
    Q = unit(centres + rng.normal(size=centres.shape) / np.sqrt(g.dim) * 6)
    labels = sorted(g.labels())
    X = g.embeddings([r.id for r in g.references()])
    owner = np.array([r.label for r in g.references()])
    groups = [np.flatnonzero(owner == lab) for lab in labels]
    moved = Q @ (Adaptation(0.3, 0.03, 30.0).fit(X, groups, C) - A.fit(X, groups)).T
    for q, (a, b) in enumerate(zip(g.search(Q, k=4), plain.search(Q, k=4))):
        got, before = dict(a.labels), dict(b.labels)
        np.testing.assert_allclose([got[lab] - before[lab] for lab in labels], moved[q], atol=2e-5)
    genuine, _ = evidence(g, lambda v: (v, None))  # (no cohort offset taken off here)
    want = []
    for r in sorted(g.references(), key=lambda r: (r.label, r.id)):  # by the class mean or the nearest
        rest = [o for o in g.references() if o.id != r.id]
        Xr, own = g.embeddings([o.id for o in rest]), np.array([o.label for o in rest])
        if r.label not in own:
            continue
        x = g.embeddings([r.id])[0]
        mine = Xr[own == r.label]
        base = (x @ mine.T).max() if scoring == "nearest" else x @ unit(mine.mean(0))
        j = sorted(set(own)).index(r.label)
        D = Adaptation(0.3, 0.03, 30.0).fit(Xr, [np.flatnonzero(own == m) for m in sorted(set(own))], C)
        want.append(base + x @ D[j])
    np.testing.assert_allclose(genuine, want, atol=3e-5)


def test_trials_score_labels_adapted_as_a_gallery_does():
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(6, 24)))
    labels = np.repeat([f"c{i}" for i in range(6)], 12)
    emb = unit(centres[np.repeat(np.arange(6), 12)] + 0.35 * rng.normal(size=(72, 24)))
    plain = enrolment_trials(emb, labels, trials=4, unknown_fraction=0.33, seed=1)
    adapted = enrolment_trials(emb, labels, trials=4, unknown_fraction=0.33, seed=1, adapt=Adaptation(1.0, 0.03))
    assert plain.summary["top1_nearest"] != adapted.summary["top1_nearest"]
    assert enrolment_trials(emb, labels, trials=4, unknown_fraction=0.33, seed=1, adapt=None).summary == plain.summary
    # with a cohort (the model's) in the fit, as a gallery of the model fits: the trials' scores move too
    cohort = unit(rng.normal(size=(30, 24)))
    kept = enrolment_trials(emb, labels, trials=4, unknown_fraction=0.33, seed=1, adapt=Adaptation(1.0, 0.03, 30.0),
                            cohort=cohort)
    assert kept.summary != adapted.summary
    assert enrolment_trials(emb, labels, trials=4, unknown_fraction=0.33, seed=1, adapt=Adaptation(1.0, 0.03),
                            cohort=cohort).summary == adapted.summary  # no share asked: the cohort is not in the fit


def test_new_galleries_take_it_from_their_models_advice_and_others_do_not(model):
    from byakugan.embedder import load_landmarks

    assert Pipeline(model, {"name": "none"}).settings().adapt is None
    fused = Pipeline(model, {"name": "none"}, load_landmarks("hand-landmarks-2")).settings()
    assert fused.adapt == {"weight": 0.3, "ridge": 0.03}
    # the fused gallery's threshold for adapted scores (benchmarks/hand_cohort_fit.py's folds), over the
    # blend of the two models' thresholds that holds for unadapted ones; the onnxruntime twin says the same
    assert fused.adapted_threshold == load_landmarks("hand-landmarks-2").config["adapted_threshold"] > fused.threshold
    from byakugan.embedder.embedding.runtime import onnx_landmarks

    assert onnx_landmarks(load_landmarks("hand-landmarks-2")).adapted_threshold == fused.adapted_threshold
    from byakugan.embedder import load  # new anime galleries: their cohort in the fit (benchmarks/adapt_cohort.py)

    for name in ("anime-finetuned", "anime-tuned-tta", "anime-tuned", "anime"):
        model = load(name)[0]
        made = Pipeline(model, {"name": "none"}).settings()
        assert made.adapt == {"weight": 1.0, "ridge": 0.1, "cohort": 30.0}
        # Until its references choose one: the threshold the model gives for adapted scores (adapt_cohort.py's
        # threshold_tar95 of its recipe's folds), far above the one set on its unadapted scores.
        assert made.adapted_threshold == model.config["adapted_threshold"] > model.config["threshold"] + 0.25
        assert Gallery.create(made).threshold == made.adapted_threshold


def test_a_bundle_scores_as_the_adapted_gallery(settings, tmp_path):
    from byakugan.index.bundle import load
    from byakugan.index.export import export

    g, rng, _ = made(settings, tmp_path / "g")
    g.save()
    b = load(export(Gallery.open(tmp_path / "g"), tmp_path / "b.zip"))
    assert b.gallery.adapt == A.to_dict()
    Q = unit(rng.normal(size=(2, g.dim)))
    assert [r.labels for r in b.gallery.search(Q, k=3)] == [r.labels for r in g.search(Q, k=3)]


def test_a_milvus_lite_gallery_answers_as_the_faiss_one(settings, tmp_path):
    faiss_g, rng, centres = made(settings)
    lite = Gallery.create(dataclasses.replace(settings, adapt=A.to_dict()), tmp_path / "lite", store="milvus-lite")
    for label in faiss_g.labels():
        ids = [r.id for r in faiss_g.references(label)]
        lite.enroll(label, faiss_g.embeddings(ids))
    lite.save()
    Q = unit(centres + rng.normal(size=centres.shape) / np.sqrt(faiss_g.dim) * 6)
    for a, b in zip(faiss_g.search(Q, k=3), Gallery.open(tmp_path / "lite").search(Q, k=3)):
        assert [lab for lab, _ in a.labels] == [lab for lab, _ in b.labels]
        np.testing.assert_allclose([s for _, s in a.labels], [s for _, s in b.labels], atol=1e-4)


def test_the_gallery_page_says_its_scores_are_adapted(settings, tmp_path, monkeypatch):
    from tests.test_ui import go, start

    g, _, _ = made(settings, tmp_path / "gallery")
    g.threshold = 1.2  # an adapted score: the raw threshold's box takes it (its bounds were -1 and 1)
    g.save()
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    assert any("adapted to this gallery's classes" in c.value for c in at.caption)
    box = at.text_input(key="threshold")
    assert not at.exception and box.value == "1.2000" and box.label == "Threshold (adapted score, from -1.3 to 1.3)"
    box.set_value("1.25").run()
    at.button(key="save_raw_threshold").click().run()
    assert not at.exception and Gallery.open(tmp_path / "gallery").threshold == 1.25


def test_the_cli_turns_it_on_and_off_and_names_a_bad_value(settings, tmp_path, capsys):
    from byakugan.ui.cli import main

    g, _, _ = made(settings, tmp_path / "g")
    g.adapt = None
    g.save()
    assert main(["scoring", str(tmp_path / "g"), "--adapt", "0.5"]) == 0
    assert Gallery.open(tmp_path / "g").adapt == {"weight": 0.5, "ridge": 0.03}
    assert "adapted to its classes (weight 0.5, ridge 0.03)" in capsys.readouterr().out
    assert main(["scoring", str(tmp_path / "g")]) == 0
    out = capsys.readouterr()
    assert out.out == "nearest\n" and "adapted to its classes: weight 0.5" in out.err
    with pytest.raises(SystemExit) as exc:
        main(["scoring", str(tmp_path / "g"), "--adapt", "0.5,-1"])
    assert exc.value.code == 2 and "adapt ridge -1.0: must be a number at least 0.001, at most 100" in capsys.readouterr().err
    for bad in ("0.3,", "nan", "5"):
        with pytest.raises(SystemExit):
            main(["scoring", str(tmp_path / "g"), "--adapt", bad])
        assert f"--adapt: {bad!r}" in capsys.readouterr().err
    assert main(["scoring", str(tmp_path / "g"), "--adapt", "0.5,0.03,30"]) == 2  # no cohort here to fit with
    assert "adapt cohort 30: this gallery holds no cohort to fit with" in capsys.readouterr().err
    assert Gallery.open(tmp_path / "g").adapt == {"weight": 0.5, "ridge": 0.03}
    assert main(["scoring", str(tmp_path / "g"), "mean", "--no-adapt"]) == 0
    g = Gallery.open(tmp_path / "g")
    assert g.adapt is None and g.scoring == "mean"


def test_parts_left_out_of_adapt_come_from_the_gallerys_model(tmp_path, capsys):
    """`--adapt 0.5` on an anime gallery keeps the ridge and cohort its model advises (1,0.1,30),
    not the 0.03 and no cohort of a model that advises nothing; a part given wins."""
    from byakugan.embedder import load
    from byakugan.embedder.scoring.adapt import completed
    from byakugan.ui.cli import main

    Pipeline(load("anime-finetuned")[0], {"name": "none"}).new_gallery(tmp_path / "g").save()
    for given, want in (("0.5", {"weight": 0.5, "ridge": 0.1, "cohort": 30.0}),
                        ("0.5,0.2", {"weight": 0.5, "ridge": 0.2, "cohort": 30.0}),
                        ("0.5,0.2,0", {"weight": 0.5, "ridge": 0.2})):
        assert main(["scoring", str(tmp_path / "g"), "--adapt", given]) == 0
        assert Gallery.open(tmp_path / "g").adapt == want, given
    assert "(weight 0.5, ridge 0.2)" in capsys.readouterr().out
    assert completed({"weight": 2}, None) == Adaptation(2.0, 0.03)
    assert completed({"weight": 2}, Adaptation(1.0, 0.1, 30.0)) == Adaptation(2.0, 0.1, 30.0)
    with pytest.raises(ValueError, match="adapt weight 3"):
        completed({"weight": 3}, Adaptation(1.0, 0.1))


def test_a_gallery_finds_its_model_folder_from_anywhere_and_says_what_to_give_without_it(tmp_path, capsys, monkeypatch):
    """A gallery made from a model folder found it only by name, so only from the folder it was made
    in (`export`, `scoring --adapt W` failed elsewhere): it records the folder. With the folder gone,
    `--adapt` says that all three parts need no model."""
    import json
    import shutil

    from byakugan.ui.cli import main

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "models" / "default", tmp_path / "mine")
    config = json.loads((tmp_path / "mine" / "config.json").read_text())
    (tmp_path / "mine" / "config.json").write_text(json.dumps(config | {"name": "mine"}))
    monkeypatch.chdir(tmp_path)
    Pipeline.create("mine").new_gallery(tmp_path / "g").save()  # named as a folder beside the working one
    assert Gallery.open(tmp_path / "g").model_settings["source"] == str(tmp_path / "mine")
    monkeypatch.chdir(tmp_path.parent)
    assert main(["scoring", str(tmp_path / "g"), "--adapt", "0.5"]) == 0
    assert Gallery.open(tmp_path / "g").adapt == {"weight": 0.5, "ridge": 0.03}
    shutil.move(tmp_path / "mine", tmp_path / "moved")
    assert main(["scoring", str(tmp_path / "g"), "--adapt", "0.6"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'mine'" in err and "the parts of --adapt left out come from the model's advice: give all three " \
        "(WEIGHT,RIDGE,COHORT)" in err
    assert Gallery.open(tmp_path / "g").adapt == {"weight": 0.5, "ridge": 0.03}
    assert main(["scoring", str(tmp_path / "g"), "--adapt", "0.6,0.03,0"]) == 0
    assert Gallery.open(tmp_path / "g").adapt == {"weight": 0.6, "ridge": 0.03}
    assert Pipeline.for_gallery(Gallery.open(tmp_path / "g"), str(tmp_path / "moved")).encoder.name == "mine"


def test_a_threshold_on_the_adapted_scale_is_set_kept_exported_and_guarded(settings, tmp_path, capsys):
    """Adapted scores reach past 1 (a cosine plus up to about the weight), and so may a threshold:
    the automatic one was, and a user could not set it again by hand, nor load its bundle."""
    from byakugan.index.bundle import load
    from byakugan.index.errors import GalleryError
    from byakugan.index.export import export
    from byakugan.ui.cli import main

    g, _, _ = made(settings, tmp_path / "g")
    g.save()
    assert main(["threshold", str(tmp_path / "g"), "1.2"]) == 0 and Gallery.open(tmp_path / "g").threshold == 1.2
    capsys.readouterr()
    assert main(["threshold", str(tmp_path / "g"), "1.31"]) == 2  # past 1 + weight 0.3
    assert "threshold 1.31: must be an adapted score (a cosine plus up to the adaptation's weight) between -1.3 and 1.3" \
        in capsys.readouterr().err
    b = load(export(Gallery.open(tmp_path / "g"), tmp_path / "b.zip"))  # its bundle loads, with the same threshold
    assert b.gallery.threshold == 1.2
    g = Gallery.open(tmp_path / "g")
    with pytest.raises(GalleryError, match=r"^threshold 1.2: fixed, and past any score unadapted \(from -1 to 1\); "
                                           r"set another threshold, or auto, first$"):
        g.adapt = None  # every search would answer "unknown"
    assert g.adapt == A.to_dict()
    g.threshold_auto = True
    g.adapt = None  # the automatic threshold follows it
    with pytest.raises(GalleryError, match="must be a cosine similarity between -1 and 1"):
        g.threshold = 1.2
    for bad in ("3.5", "1" * 5000):  # one short line, not the whole argument
        with pytest.raises(SystemExit):
            main(["threshold", str(tmp_path / "g"), bad])
        assert len(capsys.readouterr().err) < 300
    with pytest.raises(SystemExit):
        main(["scoring", str(tmp_path / "g"), "--adapt", "0.3,0.1,2,1"])
    assert "4 parts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["scoring", str(tmp_path / "g"), "--adapt", "1e-320"])  # adapted in name only
    assert "adapt weight 1e-320: must be a number at least 0.01, at most 2" in capsys.readouterr().err


def test_byakugan_models_says_which_galleries_adapt_their_scores(capsys):
    from byakugan.ui.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("hand-landmarks-2 "))
    assert line.endswith("fused into new hand galleries; their scores adapted to their classes, weight 0.3, ridge 0.03, "
                         "threshold 0.8871 until their references choose one)")
    line = next(x for x in out if x.startswith("anime-finetuned "))
    assert "; their scores adapted to their classes, weight 1, ridge 0.1, cohort 30, threshold 0." in line
    assert line.endswith(" until their references choose one)")


def test_byakugan_models_lists_every_landmark_folder_whatever_its_state(tmp_path, monkeypatch, capsys):
    """A landmark folder with a malformed 'adapt', or without its weights, is listed (its own use
    names the fault): the listing stopped there with a traceback, or with exit 2, and so did the
    choice of landmarks for every new hand gallery."""
    import json
    import shutil
    from pathlib import Path

    from byakugan.embedder.embedding.landmarks import landmarks_for
    from byakugan.ui.cli import main

    shipped = Path(__file__).resolve().parents[1] / "models"
    for p in shipped.iterdir():
        (tmp_path / p.name).symlink_to(p)
    for name, change in (("bad-adapt", {"adapt": {"weight": "0.3", "ridge": 0.03}}), ("no-weights", {})):
        shutil.copytree(shipped / "hand-landmarks-2", tmp_path / name)
        cfg = json.loads((tmp_path / name / "config.json").read_text()) | change
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "no-weights" / "model.safetensors").unlink()
    monkeypatch.setenv("BYAKUGAN_MODELS_DIR", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "bad-adapt  (hand-landmark model, for detector hand)\n" in out and "no-weights  (hand-landmark model" in out
    assert landmarks_for("hand") == "hand-landmarks-2"


def test_directions_are_made_again_for_another_cohort(settings):
    g, rng, _ = made(settings)
    a, means = Adaptation(0.3, 0.03, 30.0), g.means()
    C1, C2 = unit(rng.normal(size=(10, g.dim))), unit(rng.normal(size=(10, g.dim)))
    first = means.directions(a, C1)[1].copy()
    assert not np.allclose(means.directions(a, C2)[1], first) and np.allclose(means.directions(a, C1)[1], first)
    assert np.allclose(means.directions(a, None)[1], means.directions(A)[1])  # none: as without the cohort


def test_the_cohorts_share_is_computed_once_for_its_array_and_edits_keep_it(settings, monkeypatch):
    import byakugan.index.means as means_module

    g, rng, centres = made(settings)
    a, C = Adaptation(0.3, 0.03, 30.0), unit(rng.normal(size=(10, g.dim)))
    calls = []
    real = means_module.cohort_outer
    monkeypatch.setattr(means_module, "cohort_outer", lambda c: calls.append(1) or real(c))
    g.means().directions(a, C)
    g.enroll("a", unit(centres[:1] + 0.1 * rng.normal(size=(2, g.dim))))
    g.remove_reference(g.references("d")[0].id)
    labels, D = g.means().directions(a, C)
    assert len(calls) == 1  # after two edits: the directions again, the cohort's share not
    fresh = ClassMeans(g.dim, gram=True)
    for label in g.labels():
        fresh.add(label, g.embeddings([r.id for r in g.references(label)]))
    assert labels == fresh.directions(a, C)[0] and np.allclose(D, fresh.directions(a, C)[1], atol=1e-5)
    g.means().directions(a, C.copy())  # the same numbers in another array: computed for it
    assert len(calls) == 3


def test_a_new_gallery_falls_back_to_the_models_threshold_for_the_scores_it_gives(settings, tmp_path):
    """Adapted scores sit far above the cosines a model's threshold was set on (anime: about 0.3
    against 0.0), so until its references choose one a gallery uses the model's threshold for
    adapted scores while it adapts them (moved in proportion to the weight where it is not the one
    advised), and the plain one while it does not."""
    plain = dataclasses.replace(settings, threshold=0.05)
    assert Gallery.create(dataclasses.replace(plain, adapt=A.to_dict())).threshold == 0.05  # none given: as before
    g = Gallery.create(dataclasses.replace(plain, adapt=A.to_dict(), adapted_threshold=0.35), tmp_path / "g")
    assert g.threshold == 0.35 and g.threshold_auto
    g.adapt = None
    assert g.threshold == 0.05
    g.adapt = {"weight": 0.03, "ridge": 0.1}  # a tenth of the advised weight: a tenth of the way up
    assert g.threshold == pytest.approx(0.08)
    g.adapt = A.to_dict()
    assert g.threshold == 0.35
    g.threshold = 0.2  # fixed by hand: kept whatever the scoring
    g.adapt = None
    assert g.threshold == 0.2 and not g.threshold_auto
    g.adapt, g.threshold_auto = A.to_dict(), True
    assert g.threshold == 0.35
    g.enroll("a", unit(np.random.default_rng(0).normal(size=(3, g.dim))))
    g.save()
    again = Gallery.open(tmp_path / "g")
    again.adapt = None
    assert again.threshold == 0.05
    # Not adapted at the start: the adapted threshold is never recorded, so turning it on later keeps the plain one.
    assert Gallery.create(dataclasses.replace(plain, adapted_threshold=0.35)).threshold == 0.05
    zero = Gallery.create(dataclasses.replace(plain, adapt=A.to_dict(), adapted_threshold=0.0))  # a threshold like any
    assert zero.threshold == 0.0
    # A threshold given at creation is checked as the setter checks it: an adapted score reaches past 1.
    assert Gallery.create(dataclasses.replace(plain, adapt=A.to_dict()), threshold=1.2).threshold == 1.2


def damaged(settings, folder, key, stored):
    """A saved gallery of one label whose setting `key` holds `stored` (raw text) in its database."""
    import sqlite3

    g = Gallery.create(settings, folder)
    g.enroll("a", unit(np.random.default_rng(0).normal(size=(3, g.dim))))
    g.save()
    with sqlite3.connect(folder / "gallery.db") as con:
        assert con.execute("UPDATE settings SET value = ? WHERE key = ?", (stored, key)).rowcount == 1
    return folder


@pytest.mark.parametrize("stored", ['"x"', '"0.3"', "null", "[0.3]", "[2.5, 1.0]", "[0.3, 0]", "true"])
def test_a_damaged_adapted_threshold_is_named_when_the_gallery_opens(settings, tmp_path, stored):
    from byakugan.index.errors import GalleryError

    adapted = dataclasses.replace(settings, adapt=A.to_dict(), adapted_threshold=0.35)
    with pytest.raises(GalleryError, match=r"model_threshold_adapted .* must be \[threshold, weight\]"):
        Gallery.open(damaged(adapted, tmp_path / "g", "model_threshold_adapted", stored))


@pytest.mark.parametrize("stored", ['"banana"', "null", "1"])
def test_a_damaged_threshold_mode_is_named_when_the_gallery_opens(settings, tmp_path, stored):
    """It was read as "fixed", at whatever threshold the gallery last stored, without a word."""
    from byakugan.index.errors import GalleryError

    with pytest.raises(GalleryError, match=r"threshold_mode .* must be 'auto' or 'fixed'"):
        Gallery.open(damaged(settings, tmp_path / "g", "threshold_mode", stored))


@pytest.mark.parametrize("stored", ["{", "", b"\xff"])
@pytest.mark.parametrize("key, said", [
    ("threshold", r"gallery.db: setting 'threshold' is not valid JSON \(.*\); another program"),
    ("commit", r"gallery.db is damaged \(setting 'commit' is not valid JSON: .*\); nothing"),  # read first, alone
])
def test_a_setting_that_is_not_json_is_named(settings, tmp_path, stored, key, said):
    """It was told as "gallery.db is not a readable database", sending people after the whole file."""
    from byakugan.index.errors import GalleryError

    with pytest.raises(GalleryError, match=said):
        Gallery.open(damaged(settings, tmp_path / "g", key, stored))


def test_a_models_adapted_threshold_is_read_and_checked():
    from types import SimpleNamespace

    from byakugan.embedder.errors import ModelError
    from byakugan.embedder.scoring.adapt import advised_threshold

    advice = {"weight": 1.0, "ridge": 0.1}
    assert advised_threshold(SimpleNamespace(config={"adapt": advice, "adapted_threshold": 0.3})) == 0.3
    assert advised_threshold(SimpleNamespace(config={"adapt": advice})) is None
    assert advised_threshold(SimpleNamespace(config={"adapted_threshold": 0.3})) is None  # no advice to adapt: none
    assert advised_threshold(SimpleNamespace(config={}), SimpleNamespace(adapt=advice, adapted_threshold=-0.1)) == -0.1
    for bad in ("0.3", True, 7, 2.5, float("nan")):  # 2.5: past any score adapted at weight 1
        with pytest.raises(ModelError, match=f"model m: config.json: adapted_threshold {bad!r}: must be a number from "
                                             r"-2 to 2 \(its adapt weight 1\)"):
            advised_threshold(SimpleNamespace(config={"adapt": advice, "adapted_threshold": bad}, name="m"))
