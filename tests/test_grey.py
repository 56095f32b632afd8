"""Pictures in shades of grey (manga pages): told from colour, and sent to anime-face-net's heads
trained on grey pictures, while pictures in colour, and galleries made before, get what they got."""

import io

import numpy as np
import pytest
from PIL import Image

from byakugan.embedder import ModelError
from byakugan.embedder.detection import create_detector
from byakugan.embedder.detection.grey import is_grey


def _jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_is_grey_tells_a_grey_page_from_a_picture_in_colour():
    rng = np.random.default_rng(0)
    page = Image.fromarray(rng.integers(0, 255, (120, 90), dtype=np.uint8))
    assert is_grey(page) and is_grey(page.convert("RGB")) and is_grey(_jpeg(page.convert("RGB")))
    colour = Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    assert not is_grey(colour) and not is_grey(_jpeg(colour))
    stamped = page.convert("RGB")
    stamped.paste((220, 30, 30), (0, 0, 6, 6))  # a small red stamp (0.3% of the page) leaves it a grey page
    assert is_grey(stamped)
    stamped.paste((220, 30, 30), (0, 0, 30, 30))  # a red caption over 8% makes it a picture in colour
    assert not is_grey(stamped)
    assert not is_grey(Image.new("RGB", (50, 50), (240, 200, 170)))  # skin is a colour, however pale


class _Recorder:
    """Stands in for an onnxruntime session: records which outputs were asked for."""

    def __init__(self, session, asked: list) -> None:
        self.session, self.asked = session, asked

    def run(self, outputs, feed):
        self.asked.append(tuple(outputs) if outputs else None)
        return self.session.run(outputs, feed)

    def get_outputs(self):
        return self.session.get_outputs()


def test_a_grey_picture_is_searched_and_checked_by_the_grey_heads(datasets, monkeypatch):
    from byakugan.embedder.detection.face_net import GREY_OUTPUTS, OUTPUTS

    colour = Image.open(datasets / "anime-scenes" / "nishikino_maki" / "10.jpg").convert("RGB")
    grey = colour.convert("L").convert("RGB")
    for config, picture, heads, unit in [("anime-face-net", colour, OUTPUTS, False),
                                         ("anime-face-net", grey, GREY_OUTPUTS, True),
                                         ({"name": "anime-face-net", "grey": False}, grey, OUTPUTS, False)]:
        det = create_detector(config)
        asked, units = [], []
        monkeypatch.setattr(det, "_session", _Recorder(det._session, asked))
        real = det.verifier.__call__
        monkeypatch.setattr(det, "verifier", lambda crops, g=False, real=real: units.append(g) or real(crops, g))
        assert det(picture), "a face is found in colour and in grey"
        assert set(asked) == {heads} and set(units) == {unit}


def test_a_grey_face_the_colour_heads_miss_is_found(datasets):
    """A head shot in grey: the colour heads return no box; the grey ones find the face where the
    colour heads find it in the picture in colour."""
    from byakugan.embedder.detection.faces import iou

    img = Image.open(datasets / "anime-onepiece" / GREY_EXAMPLE).convert("RGB")
    grey = img.convert("L").convert("RGB")
    assert create_detector({"name": "anime-face-net", "grey": False, "whole_if_verified": 0})(grey) == []
    found = create_detector("anime-face-net")(grey)
    in_colour = create_detector("anime-face-net")(img)
    assert found and in_colour and iou(found[0].box, in_colour[0].box) > 0.5


GREY_EXAMPLE = "luobin/25.jpg"  # judged a face in colour; found nowhere by the colour heads in grey


def test_files_made_before_the_grey_heads_are_refused_in_one_line_or_used_without_them(tmp_path):
    import onnx

    from byakugan.embedder.detection.assets import ANIMEFACE_NET, ANIMEFACE_VERIFIER, shipped_path

    model = onnx.load(str(shipped_path(ANIMEFACE_NET)))
    keep = [o for o in model.graph.output if not o.name.startswith("grey_")]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    old = tmp_path / "old_net.onnx"
    onnx.save(model, str(old))
    with pytest.raises(ModelError, match=r"old_net.onnx has no head for pictures in shades of grey .*set grey false"):
        create_detector({"name": "anime-face-net", "model": str(old)})
    picture = Image.new("L", (64, 48), 128).convert("RGB")
    assert create_detector({"name": "anime-face-net", "model": str(old), "grey": False})(picture) == []
    cascade_verifier = str(shipped_path(ANIMEFACE_VERIFIER))  # one unit: made before
    with pytest.raises(ModelError, match=r"has no unit for pictures in shades of grey .*set grey false"):
        create_detector({"name": "anime-face-net", "verifier": cascade_verifier})
    assert create_detector({"name": "anime-face-net", "verifier": cascade_verifier, "grey": False})(picture) == []


def test_the_grey_head_has_its_own_threshold(datasets):
    img = Image.open(datasets / "anime-scenes" / "nishikino_maki" / "10.jpg").convert("RGB")
    strict = create_detector({"name": "anime-face-net", "grey_min_score": 1.0, "second_side": 0,
                              "whole_if_verified": 0})
    assert strict(img) and strict(img.convert("L").convert("RGB")) == []  # colour keeps min_score; grey needs 1.0
    colour_strict = create_detector({"name": "anime-face-net", "min_score": 1.0, "second_side": 0,
                                     "whole_if_verified": 0})
    assert colour_strict(img) == [] and colour_strict(img.convert("L").convert("RGB"))


def test_the_model_pick_judges_grey_images_by_the_grey_unit(datasets, monkeypatch):
    from byakugan.embedder.detection import looks
    from byakugan.embedder.detection.verifier import FaceVerifier

    faces = [Image.open(f).convert("RGB") for f in sorted((datasets / "anime-onepiece" / "luobin").iterdir())[:6]]
    mixed = faces[:3] + [f.convert("L").convert("RGB") for f in faces[3:]]
    asked = []
    real = FaceVerifier.__call__
    monkeypatch.setattr(FaceVerifier, "__call__", lambda self, imgs, grey=False: asked.append((len(imgs), grey))
                        or real(self, imgs, grey))
    assert looks.judge(mixed).judged == 6
    assert sorted(asked) == [(3, False), (3, True)]


def test_galleries_and_bundles_made_before_keep_the_colour_heads():
    stored = {k: v for k, v in create_detector("anime-face-net").config.items() if k not in ("grey", "grey_min_score")}
    assert create_detector(stored).settings.grey is False  # the settings of its day: no grey
    assert create_detector({"name": "anime-face-net", "side": 640}).settings.grey is True  # a few: today's
    with pytest.raises(ModelError, match="grey 'yes' must be true or false"):
        create_detector({"name": "anime-face-net", "grey": "yes"})
    with pytest.raises(ModelError, match="grey_min_score 2 must be a number from 0 to 1"):
        create_detector({"name": "anime-face-net", "grey_min_score": 2})


def test_a_grey_head_shot_the_network_finds_nothing_in_is_taken_whole(datasets):
    """Its face fills the picture, beyond the network's sizes; the verifier's grey unit calls the picture a face."""
    img = Image.open(datasets / "anime-onepiece" / "lufei" / "103.jpg").convert("L").convert("RGB")
    assert create_detector({"name": "anime-face-net", "whole_if_verified": 0})(img) == []
    found = create_detector("anime-face-net")(img)
    assert [d.box for d in found] == [(0, 0, img.width, img.height)] and found[0].score >= 0.7


def test_a_picture_taken_whole_is_said_to_be_so(datasets, tmp_path, capsys):
    import json

    from byakugan.ui.cli import main

    pictures = datasets / "anime-onepiece" / "lufei"
    grey = Image.open(pictures / "103.jpg").convert("L").convert("RGB")
    grey.save(tmp_path / "q.png")  # (saved as JPEG again, its grain gives the network a face to find)
    assert main(["enroll", str(tmp_path / "g"), "lufei", *(str(pictures / f"{i}.jpg") for i in (0, 1, 10)),
                 "--detector", "anime-face-net", "--fallback", "whole"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "g"), str(tmp_path / "q.png"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)[0]["detections"][0]
    assert d["found"] and d["whole"] and d["box"] == [0, 0, grey.width, grey.height]
    assert main(["search", str(tmp_path / "g"), str(tmp_path / "q.png")]) == 0
    assert "[the whole image, taken as the face]" in capsys.readouterr().out
