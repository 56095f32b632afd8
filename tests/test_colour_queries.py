"""A query with no colour in it (a manga panel) against references in colour scores by the CNN part
alone; galleries of grey references, pictures in colour and galleries made before score as they did."""

import json

import numpy as np
import pytest
from PIL import Image

import byakugan.embedder as embedder
from byakugan.embedder.preprocess import Preprocess
from byakugan.embedder.scoring.colourless import colourless, colourless_form
from byakugan.index import Gallery, Pipeline
from byakugan.index.errors import GalleryError
from byakugan.index.bundle import load as load_bundle
from byakugan.index.export import export
from byakugan.index.settings import check_colourless


@pytest.fixture(scope="module")
def model():
    return embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="c", colour={"weight": 1.0})


def _pictures(tmp_path, grey: bool) -> list:
    rng, out = np.random.default_rng(0), []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]):
        arr = np.clip(np.full((64, 48, 3), colour) + rng.integers(-20, 20, (64, 48, 3)), 0, 255).astype(np.uint8)
        arr[10 + 8 * i: 30 + 8 * i, 5:40] = 255
        img = Image.fromarray(arr)
        p = tmp_path / f"{'g' if grey else 'c'}{i}.png"
        (img.convert("L").convert("RGB") if grey else img).save(p)
        out.append(p)
    return out


def test_a_grey_picture_is_told_from_its_histogram_part(model, tmp_path):
    split = model.dim - model.colour.dim
    col, grey = model.embed(_pictures(tmp_path, False)), model.embed(_pictures(tmp_path, True))
    assert not colourless(col, split, model.colour.bins).any() and colourless(grey, split, model.colour.bins).all()
    q = colourless_form(np.concatenate([col, grey]), split, model.colour.bins, 1.0)
    np.testing.assert_array_equal(q[:4], col)  # rows in colour are left as they are
    assert not q[4:, split:].any()
    # a colourless row scores the CNN cosine (the CNN part of a stored row is e / sqrt(2) at weight 1)
    np.testing.assert_allclose(q[4:] @ col.T, (grey[:, :split] @ col[:, :split].T) * 2, atol=1e-5)
    with pytest.raises(ValueError, match="colour part of 192 columns: bins \\[12, 4, 3\\] make 144"):
        colourless(col, split, (12, 4, 3))

    # a scanned page: dark ink with a unit of noise per channel (saturated by arithmetic) is still grey
    rng = np.random.default_rng(1)
    page = np.full((64, 48), 230, np.int16)
    page[:, :20] = 4
    noisy = np.clip(page[..., None] + rng.integers(-1, 2, (64, 48, 3)), 0, 255).astype(np.uint8)
    p = tmp_path / "scan.png"
    Image.fromarray(noisy).save(p)
    assert colourless(model.embed([p]), split, model.colour.bins).all()


def test_a_gallery_in_colour_scores_grey_queries_by_the_cnn_part(model, tmp_path):
    pipe = Pipeline.create(model)
    g = pipe.new_gallery(tmp_path / "g")
    split = model.dim - model.colour.dim
    assert g.colourless_queries == {"split": split, "bins": [12, 4, 4], "weight": 1.0}
    col = _pictures(tmp_path, False)
    for i, p in enumerate(col):
        pipe.enroll(g, f"c{i}", [p])
    g.save()
    grey = model.embed(_pictures(tmp_path, True))
    q, _ = pipe.query(g, grey)
    np.testing.assert_allclose(q, colourless_form(grey, split, [12, 4, 4], 1.0))
    expected = (grey[:, :split] @ model.embed(col)[:, :split].T) * 2
    scores = [dict(r.labels) for r in pipe.search(g, grey, k=4)]
    np.testing.assert_allclose([[s[f"c{j}"] for j in range(4)] for s in scores], expected, atol=1e-4)
    # the same in a reopened gallery and in its exported bundle
    again = Gallery.open(tmp_path / "g")
    np.testing.assert_allclose(pipe.query(again, grey)[0], q)
    b = load_bundle(export(again, tmp_path / "b.zip", pipeline=pipe))
    for i, p in enumerate(_pictures(tmp_path, True)):
        assert b.search(p, k=1)[0]["labels"][0]["score"] == pytest.approx(float(expected[i].max()), abs=1e-4)
    # queries in colour are searched as they were
    np.testing.assert_array_equal(pipe.query(g, model.embed(col))[0], model.embed(col))


def test_a_gallery_of_grey_references_keeps_the_histogram(model, tmp_path):
    pipe = Pipeline.create(model)
    g = pipe.new_gallery(tmp_path / "g")
    grey = _pictures(tmp_path, True)
    for i, p in enumerate(grey):
        pipe.enroll(g, f"g{i}", [p])
    e = model.embed(grey)
    np.testing.assert_array_equal(pipe.query(g, e)[0], e)
    pipe.enroll(g, "c", _pictures(tmp_path, False) + _pictures(tmp_path, False)[:1])  # now most are in colour
    np.testing.assert_allclose(pipe.query(g, e)[0], colourless_form(e, g.colourless_queries["split"], [12, 4, 4], 1.0))


def test_galleries_made_before_and_bad_settings(model, tmp_path):
    pipe = Pipeline.create(model)
    g = pipe.new_gallery(tmp_path / "g")
    pipe.enroll(g, "c", _pictures(tmp_path, False)[:2])
    g.save()
    db = tmp_path / "g"
    # a gallery made before records nothing: every query is scored as it always was
    old = Gallery.open(db)
    old._meta.pop("colourless_queries")
    e = model.embed(_pictures(tmp_path, True))
    np.testing.assert_array_equal(pipe.query(old, e)[0], e)
    dim = model.dim
    for bad, why in [({"split": 1, "bins": [12, 4, 4], "weight": 1.0}, "must leave the model's"),
                     ({"split": dim - 192, "bins": [12, 4], "weight": 1.0}, "3 whole numbers"),
                     ({"split": dim - 192, "bins": [12, 4, 4], "weight": -1}, "above 0"),
                     ({"split": dim - 192, "bins": [12, 4, 4]}, "must be \\{split, bins, weight\\}"),
                     ({"split": dim - 192, "bins": [True, 4, 4], "weight": 1.0}, "3 whole numbers"),
                     ({"split": dim - 192, "bins": [12, 4, 4], "weight": 1e6}, "at most 100"),
                     ("yes", "must be \\{split, bins, weight\\}")]:
        with pytest.raises(ValueError, match=why):
            check_colourless(bad, dim)
    with pytest.raises(ValueError, match="not for a gallery that fuses hand landmarks"):
        check_colourless(g.colourless_queries, dim, fused=True)
    assert json.dumps(check_colourless(g.colourless_queries, dim))


def test_evaluate_scores_a_set_as_its_gallery_would(model, tmp_path, capsys):
    """`byakugan evaluate` rescales a set's colourless queries as a gallery of the set would: only
    where most of the set is in colour, never for a model without the histogram."""
    from byakugan.index.colour_queries import set_queries
    from byakugan.ui.cli import main

    split = model.dim - model.colour.dim
    col, grey = model.embed(_pictures(tmp_path, False)), model.embed(_pictures(tmp_path, True))
    q, n = set_queries(model, np.concatenate([col, grey[:1]]))
    assert n == 1 and np.array_equal(q[:4], col) and not q[4, split:].any()
    assert set_queries(model, np.concatenate([col[:1], grey]))[1] == 0  # mostly grey: kept as it is
    plain = embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="p")
    assert set_queries(plain, plain.embed(_pictures(tmp_path, True)))[1] == 0

    data = tmp_path / "set"  # four classes of one colour each, three pictures each, and one grey picture
    for c, p in enumerate(_pictures(tmp_path, False)):
        (data / f"c{c}").mkdir(parents=True)
        for j in range(3):
            Image.open(p).rotate(5 * j).save(data / f"c{c}" / f"{j}.png")
    Image.open(_pictures(tmp_path, True)[0]).save(data / "c0" / "grey.png")
    folder = model.save(tmp_path / "model")
    args = ["evaluate", str(data), "--model", str(folder), "--shots", "2", "--trials", "2", "--unknown-fraction", "0",
            "--json"]
    assert main([*args, "--save-embeddings", str(tmp_path / "e.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["colourless_queries"] == 1
    from safetensors.numpy import load_file

    saved = load_file(tmp_path / "e.safetensors")  # the rows searched with are saved beside the stored ones
    assert (saved["queries"] != saved["cnn"]).any(axis=1).sum() == 1
    assert main(args[:-1]) == 0 and "1 pictures without colour" in capsys.readouterr().out


def test_a_model_with_views_records_the_rule_and_tells_grey_pictures_by_their_views(tmp_path):
    """anime-finetuned embeds four views of each picture: its rows are still [CNN part, histogram
    part], and a grey picture's views are all grey (measured: models/anime-finetuned/grey_queries_folds.json)."""
    model = embedder.load("anime-finetuned")[0]
    assert model.config["tta"] == "flip_crop"
    g = Pipeline.create(model).new_gallery(tmp_path / "g")
    split = model.dim - model.colour.dim
    assert g.colourless_queries == {"split": split, "bins": [12, 4, 4], "weight": 1.0}
    grey, col = model.embed(_pictures(tmp_path, True)), model.embed(_pictures(tmp_path, False))
    assert colourless(grey, split, [12, 4, 4]).all() and not colourless(col, split, [12, 4, 4]).any()


def test_the_rule_is_turned_off_and_on_again_in_a_gallery(model, tmp_path, capsys):
    """`byakugan scoring G --grey-queries all|cnn`: a gallery made before the rule can take it, and any
    gallery can leave it; what it records is what a new gallery of its model records."""
    from byakugan.index.settings import colourless_spec
    from byakugan.ui.cli import main

    folder, db = model.save(tmp_path / "model"), tmp_path / "g"
    col = _pictures(tmp_path, False)
    for i, p in enumerate(col):
        assert main(["enroll", str(db), f"c{i}", str(p), "--model", str(folder)]) == 0
    spec = Gallery.open(db).colourless_queries
    assert spec == colourless_spec(model)
    grey = model.embed(_pictures(tmp_path, True))
    pipe = Pipeline.for_gallery(Gallery.open(db))
    assert main(["scoring", str(db), "--grey-queries", "all"]) == 0
    assert "every query scored alike" in capsys.readouterr().out
    off = Gallery.open(db)  # kept off across a reopen (stored as null), and so exported
    assert off.colourless_queries is None and off.scoring == "nearest"
    np.testing.assert_array_equal(pipe.query(off, grey)[0], grey)
    assert "colourless_queries" not in load_bundle(export(off, tmp_path / "b.zip", pipeline=pipe)).config
    assert main(["scoring", str(db), "--grey-queries", "cnn"]) == 0
    on = Gallery.open(db)
    assert on.colourless_queries == spec
    np.testing.assert_allclose(pipe.query(on, grey)[0], colourless_form(grey, spec["split"], spec["bins"], spec["weight"]))
    assert main(["scoring", str(db)]) == 0 and "--grey-queries all to stop" in capsys.readouterr().err
    # adapted by hand, with no threshold from the model for adapted scores: said that strangers pass more often
    assert main(["scoring", str(db), "--adapt", "1,0.1,0"]) == 0
    err = capsys.readouterr().err
    assert "the automatic threshold is the model's" in err and "(they give 0)" in err and err.count("\n") == 1
    assert main(["scoring", str(db), "--no-adapt"]) == 0 and not capsys.readouterr().err

    with pytest.raises(GalleryError, match="colourless_queries bins must be 3 whole numbers"):
        on.colourless_queries = {**spec, "bins": [12, 4]}
    assert on.colourless_queries == spec  # a refused setting changes nothing

    assert main(["labels", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["colourless_queries"] == spec
    greys = tmp_path / "greys"  # references without colour: the rule is recorded, and said not to apply now
    for i, p in enumerate(_pictures(tmp_path, True)):
        assert main(["enroll", str(greys), f"g{i}", str(p), "--model", str(folder)]) == 0
    capsys.readouterr()
    assert main(["scoring", str(greys)]) == 0 and "(not now: most have none)" in capsys.readouterr().err

    plain = embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="p")
    other = tmp_path / "plain"
    assert main(["enroll", str(other), "a", str(col[0]), "--model", str(plain.save(tmp_path / "pm"))]) == 0
    capsys.readouterr()
    assert main(["scoring", str(other), "--grey-queries", "cnn"]) == 2
    err = capsys.readouterr().err
    assert "model 'p' has no colour histogram" in err and err.count("\n") == 1
    assert Gallery.open(other).colourless_queries is None


def test_a_gallery_whose_model_folder_has_gone_says_so(model, tmp_path, capsys):
    """--grey-queries cnn reads the model; its folder moved away, the error names the folder (QA: it
    said only 'unknown model c', a name the user never typed)."""
    from byakugan.ui.cli import main

    folder, db = model.save(tmp_path / "model"), tmp_path / "g"
    assert main(["enroll", str(db), "c0", str(_pictures(tmp_path, False)[0]), "--model", str(folder)]) == 0
    folder.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["scoring", str(db), "--grey-queries", "cnn"]) == 2
    err = capsys.readouterr().err
    assert f"the gallery's model folder {folder.resolve()} is not there (moved or removed)" in err, err
    assert err.count("\n") == 1

