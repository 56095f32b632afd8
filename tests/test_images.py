import io

import numpy as np
import pytest
from PIL import Image

from byakugan.embedder import ImageError, load_image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert load_image(p).size == (20, 40)


def test_rgba_and_grey_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent -> white backdrop
    out = load_image(rgba)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("L", (8, 8), 7)).mode == "RGB"


def test_bytes_and_arrays(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (5, 6), (1, 2, 3)).save(buf, "PNG")
    assert load_image(buf.getvalue()).size == (5, 6)
    assert load_image(np.zeros((6, 5, 3), np.uint8)).size == (5, 6)
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        load_image(np.zeros((6, 5), np.float32))


@pytest.mark.parametrize(
    "content, reason",
    [(b"", r"is empty \(0 bytes\)"), (b"hello, not an image", "not an image")],
)
def test_non_images_are_named(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as e:
        load_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[:300])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(p)


def test_missing_directory_and_too_large(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    p = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(p)
    with pytest.raises(ImageError, match=r"too large: 300x200 = 60000 pixels, limit is 50000"):
        load_image(p, max_pixels=50_000)
    # A header saying 20000 x 20000: Pillow's own bomb check refuses it in open(), before ours; sizes said all the same
    import struct
    import zlib

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
                                        + struct.pack(">I", zlib.crc32(ihdr)) + b"\0\0\0\0IEND\xaeB`\x82")
    with pytest.raises(ImageError, match=r"bomb.png: image too large: 400000000 pixels, limit is 40000000$"):
        load_image(tmp_path / "bomb.png")


def test_an_empty_file_and_a_dangling_or_looping_link_are_told_apart(tmp_path):
    import os

    (tmp_path / "empty.jpg").write_bytes(b"")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    with pytest.raises(ImageError, match=r"empty.jpg: is empty \(0 bytes\)$"):
        load_image(tmp_path / "empty.jpg")
    for name in ("dangling.jpg", "a.jpg"):
        with pytest.raises(ImageError, match=r"is a symbolic link to .*, which does not exist \(or links back to itself\)$"):
            load_image(tmp_path / name)
    with pytest.raises(ImageError, match=r"nope.jpg: no such file$"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match=r"^upload.jpg: is empty \(0 bytes\)$"):  # an empty upload, as an empty file
        load_image(b"", name="upload.jpg")
