"""Galleries, bundles and models written by byakugan 0.1.0 (before one namespace and one pipeline)
open unchanged and give the answers they gave then (tests/fixtures/compat, MADE_BY.py.txt)."""

import json
from pathlib import Path

import numpy as np
import pytest

from byakugan.index import Gallery, GalleryError, Pipeline, bundle

COMPAT = Path(__file__).resolve().parent / "fixtures" / "compat"
ROOT = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((COMPAT / "expected.json").read_text())
KINDS = ("plain", "cohort", "hand")


@pytest.fixture(autouse=True)
def old_models(monkeypatch):
    # The galleries name their models ("tiny", "tiny-cohort", "tiny-landmarks"); they live here.
    monkeypatch.setenv("BYAKUGAN_MODELS_DIR", str(COMPAT / "models"))
    monkeypatch.chdir(ROOT)  # the queries and sources were recorded relative to the repository


def same_answers(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["box"] == w["box"] and g.get("landmarks") == w.get("landmarks")
        # new fields may be added (confidence, cosine); the old ones keep their values
        assert {k: g["match"][k] for k in w["match"] if k != "score"} == {k: v for k, v in w["match"].items() if k != "score"}
        assert g["match"]["score"] == pytest.approx(w["match"]["score"], abs=1e-5)
        assert [h["id"] for h in g["hits"]] == [h["id"] for h in w["hits"]]
        assert [h["source"] for h in g["hits"]] == [h["source"] for h in w["hits"]]
        np.testing.assert_allclose([h["score"] for h in g["hits"]], [h["score"] for h in w["hits"]], atol=1e-5)
        assert [d["label"] for d in g["labels"]] == [d["label"] for d in w["labels"]]
        np.testing.assert_allclose([d["score"] for d in g["labels"]], [d["score"] for d in w["labels"]], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_old_gallery_opens_and_answers_the_same(kind, tmp_path):
    want = EXPECTED[kind]
    g = Gallery.open(COMPAT / f"gallery-{kind}")
    assert g.labels() == want["labels"] and g.threshold == want["threshold"] and g.scoring == want["scoring"]
    pipe = Pipeline.for_gallery(g)
    for q, answer in zip(EXPECTED["queries"], want["find"]):
        same_answers([r.to_dict() for r in pipe.recognize(g, q, k=3, fallback="whole")], answer)
    # saved by this version elsewhere, it still answers the same
    g.save(tmp_path / "copy")
    again = Gallery.open(tmp_path / "copy")
    for q, answer in zip(EXPECTED["queries"], want["find"]):
        same_answers([r.to_dict() for r in pipe.recognize(again, q, k=3, fallback="whole")], answer)


@pytest.mark.parametrize("kind", KINDS)
def test_old_bundle_loads_and_answers_the_same(kind):
    b = bundle.load(COMPAT / f"bundle-{kind}.zip")
    want = EXPECTED[kind]
    assert b.labels() == want["labels"]
    for q, answer, vector in zip(EXPECTED["queries"], want["bundle"], want["embed"]):
        same_answers(b.search(q, k=3, fallback="whole"), answer)
        np.testing.assert_allclose(b.embed(q), vector, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_old_gallery_is_migrated_in_place_by_its_next_save(kind, tmp_path):
    """The first format (gallery.json + one index file) becomes gallery.db + a vector file on the
    next save in place; the old files are kept in backup-v1/ and the answers do not change."""
    import shutil

    want = EXPECTED[kind]
    path = Path(shutil.copytree(COMPAT / f"gallery-{kind}", tmp_path / "g"))
    old_files = sorted(p.name for p in path.iterdir() if p.name in ("gallery.json",) or p.suffix == ".faiss")
    g = Gallery.open(path)
    g.save()
    assert (path / "gallery.db").is_file() and not (path / "gallery.json").exists()
    assert sorted(p.name for p in (path / "backup-v1").iterdir()) == old_files
    again = Gallery.open(path)
    assert again.labels() == want["labels"] and again.threshold == want["threshold"]
    pipe = Pipeline.for_gallery(again)
    for q, answer in zip(EXPECTED["queries"], want["find"]):
        same_answers([r.to_dict() for r in pipe.recognize(again, q, k=3, fallback="whole")], answer)
    # moving the backup back (and the new files away) gives the first-format gallery again
    restored = Path(shutil.copytree(path, tmp_path / "restored"))
    for p in [*restored.glob("gallery.db*"), *restored.glob("vectors.*.f32")]:
        p.unlink()
    for p in (restored / "backup-v1").iterdir():
        p.replace(restored / p.name)
    assert Gallery.open(restored).labels() == want["labels"]


def test_a_migration_that_dies_leaves_the_first_format_gallery(tmp_path, monkeypatch):
    """Killed in its first save in the new format, the gallery still opens as it was."""
    import shutil

    from byakugan.index import db

    path = Path(shutil.copytree(COMPAT / "gallery-plain", tmp_path / "g"))
    g = Gallery.open(path)

    def dies(*args, **kwargs):
        raise OSError("simulated power cut")

    monkeypatch.setattr(db, "write_vectors", dies)
    with pytest.raises(GalleryError, match="power cut"):
        g.save()
    monkeypatch.undo()
    assert (path / "gallery.db").is_file() and (path / "gallery.json").is_file()  # the database holds nothing
    assert Gallery.open(path).labels() == EXPECTED["plain"]["labels"]
    g.save()
    assert Gallery.open(path).labels() == EXPECTED["plain"]["labels"] and not (path / "gallery.json").exists()
