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
        "sys.modules['streamlit'] = None; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
        "from byakugan.index import bundle\n"
        f"b = bundle.load({str(exported['.zip'])!r})\n"
        f"print(json.dumps(b.search({q!r}, k=3)))\n"
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
