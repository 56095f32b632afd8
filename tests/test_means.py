"""Class means kept up to date by edits answer as if computed afresh."""

import numpy as np

from byakugan.index.gallery import Gallery
from byakugan.index.means import ClassMeans
from byakugan.index.settings import GallerySettings


def test_class_means_follow_enrol_remove_and_rename(tmp_path):
    rng = np.random.default_rng(0)
    g = Gallery.create(GallerySettings({"name": "t", "fingerprint": "f", "dim": 8}, {"name": "none"}, 0.5, "mean"),
                       tmp_path / "g")

    def unit(n):
        v = rng.standard_normal((n, 8))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    for label in ("a", "b", "c"):
        g.enroll(label, unit(4))
    q = unit(6)
    g.search(q)  # builds the means; every edit below updates them
    g.enroll("a", unit(2))
    g.remove_reference(g.references("b")[0].id)
    g.remove("c")
    g.rename("a", "z")
    g.enroll("d", unit(3))
    kept = g.search(q, k=3)
    fresh = ClassMeans.of(g.vectors, {r.id: r for r in g.references()}).matrix()
    assert fresh[0] == ["b", "d", "z"] and sorted(lab for lab, _ in kept[0].labels) == fresh[0]
    g.save()  # opened again, the means are computed afresh
    again = Gallery.open(tmp_path / "g").search(q, k=3)
    assert [[(lab, round(s, 5)) for lab, s in r.labels] for r in again] == \
        [[(lab, round(s, 5)) for lab, s in r.labels] for r in kept]
    assert np.allclose([s for _, s in kept[0].labels], sorted((fresh[1] @ q[0]).tolist(), reverse=True), atol=1e-5)
