"""Tests for cifarnet.tasks.images: every image is generated in tmp_path with Pillow."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifarnet.tasks import images
from cifarnet.tasks.images import (
    RESIZE_POLICIES,
    expand_sources,
    load_image,
    load_images,
)

WHITE = (255, 255, 255)
SIZE = (40, 24)  # non-square, so every mode also goes through a real resize


def _save(path: Path, im: Image.Image, **params: object) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **params)
    return str(path)


def _palette(transparent: bool) -> Image.Image:
    im = Image.new("P", SIZE, 1)
    im.putpalette([0, 0, 0, 200, 10, 10])
    if transparent:
        im.info["transparency"] = 1  # the PNG encoder writes it as a tRNS chunk
    return im


def _array(value: float, dtype: type) -> Image.Image:
    return Image.fromarray(np.full(SIZE[::-1], value, dtype))


# image, file name, mode Pillow reopens the file in, expected RGB colour
MODE_CASES = [
    pytest.param(Image.new("1", SIZE, 1), "a.png", "1", WHITE, id="bilevel"),
    pytest.param(Image.new("L", SIZE, 100), "a.png", "L", (100,) * 3, id="gray"),
    pytest.param(Image.new("LA", SIZE, (100, 255)), "a.png", "LA", (100,) * 3, id="gray-alpha"),
    pytest.param(_palette(False), "a.png", "P", (200, 10, 10), id="palette"),
    pytest.param(_palette(True), "a.png", "P", WHITE, id="palette-transparent"),
    pytest.param(Image.new("RGB", SIZE, (10, 20, 30)), "a.png", "RGB", (10, 20, 30), id="rgb"),
    pytest.param(
        Image.new("RGBA", SIZE, (10, 20, 30, 255)), "a.png", "RGBA", (10, 20, 30), id="rgba"
    ),
    pytest.param(
        Image.new("RGBA", SIZE, (10, 20, 30, 0)), "a.png", "RGBA", WHITE, id="rgba-transparent"
    ),
    pytest.param(
        Image.new("CMYK", SIZE, (0, 255, 255, 0)), "a.tif", "CMYK", (255, 0, 0), id="cmyk"
    ),
    pytest.param(_array(0x8000, np.uint16), "a.png", "I;16", (128,) * 3, id="16-bit"),
    pytest.param(_array(40000, np.int32), "a.tif", "I", (40000 >> 8,) * 3, id="32-bit-int"),
    pytest.param(_array(0.5, np.float32), "a.tif", "F", (128,) * 3, id="float-0-to-1"),
    pytest.param(_array(200.0, np.float32), "a.tif", "F", (200,) * 3, id="float-0-to-255"),
]


@pytest.mark.parametrize(("image", "name", "mode", "colour"), MODE_CASES)
def test_every_mode_becomes_32x32_rgb(tmp_path, image, name, mode, colour):
    path = _save(tmp_path / name, image)
    with Image.open(path) as im:
        assert im.mode == mode  # the file really exercises that mode
    result = load_image(path)
    assert result.error == ""
    assert result.path == path
    assert result.pixels is not None
    assert result.pixels.shape == (32, 32, 3)
    assert result.pixels.dtype == np.uint8
    assert np.abs(result.pixels.astype(int) - colour).max() <= 1


def test_16bit_keeps_brightness_instead_of_clipping(tmp_path):
    bright = _save(tmp_path / "bright.png", Image.fromarray(np.full((8, 8), 65535, np.uint16)))
    dim = _save(tmp_path / "dim.png", Image.fromarray(np.full((8, 8), 0x4000, np.uint16)))
    assert (load_image(bright).pixels == 255).all()
    # A clip at 255 would turn this quarter-bright image fully white.
    assert (load_image(dim).pixels == 0x40).all()


def test_16bit_transparency_goes_over_white(tmp_path):
    half = np.zeros((8, 8), np.uint16)
    half[:, 4:] = 0x4000  # left half 0, the value marked transparent
    path = _save(tmp_path / "t16.png", Image.fromarray(half), transparency=0)
    pixels = load_image(path, size=8).pixels
    assert (pixels[:, :3] == 255).all() and (pixels[:, 5:] == 0x40).all()


def test_only_the_documented_formats_are_decoded_whatever_the_name(tmp_path):
    # Pillow reads EPS by running Ghostscript on the file, and ICO or TGA are no photos
    for fmt, name in (("EPS", "page.jpg"), ("ICO", "icon.png"), ("TGA", "frame.bmp")):
        path = _save(tmp_path / name, Image.new("RGB", (32, 32), (9, 9, 9)), format=fmt)
        assert load_image(path).error == "not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)"


def test_jpeg_cmyk(tmp_path):
    path = _save(tmp_path / "cmyk.jpg", Image.new("CMYK", (40, 24), (0, 0, 0, 0)), quality=95)
    result = load_image(path)
    assert result.error == ""
    assert result.pixels.min() >= 250  # no ink is white


def test_first_frame_of_animated_gif_and_multipage_tiff(tmp_path):
    red, blue = Image.new("RGB", (40, 24), (255, 0, 0)), Image.new("RGB", (40, 24), (0, 0, 255))
    for name in ("anim.gif", "pages.tif"):
        path = _save(tmp_path / name, red, save_all=True, append_images=[blue])
        with Image.open(path) as im:
            assert im.n_frames == 2
        pixels = load_image(path).pixels
        assert pixels is not None
        assert (pixels == (255, 0, 0)).all(), name


def _two_colour_wide_jpeg(path: Path, orientation: int | None) -> str:
    """64x32 image, red left half and blue right half, with an optional EXIF orientation."""
    im = Image.new("RGB", (64, 32), (255, 0, 0))
    im.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return _save(path, im, quality=95, exif=exif)


def test_exif_orientation_is_applied(tmp_path):
    rotated = load_image(_two_colour_wide_jpeg(tmp_path / "r.jpg", 6), resize="letterbox").pixels
    plain = load_image(_two_colour_wide_jpeg(tmp_path / "p.jpg", None), resize="letterbox").pixels

    # No orientation: wide, so letterboxed with black rows above and below, red on the left.
    assert plain[:7].max() <= 10
    assert plain[-7:].max() <= 10
    left, right = plain[16, 3].astype(int), plain[16, 28].astype(int)
    assert left[0] > 200 and left[2] < 60
    assert right[2] > 200 and right[0] < 60

    # Orientation 6 (rotate 90 degrees clockwise): tall, black columns left and right, and
    # the stored left (red) half is now on top.
    assert rotated[:, :7].max() <= 10
    assert rotated[:, -7:].max() <= 10
    top, bottom = rotated[4, 16].astype(int), rotated[27, 16].astype(int)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_corrupt_exif_warnings_name_their_file(tmp_path):
    # an IFD that promises a 12-byte entry and holds 4: Pillow warns "Corrupt EXIF data"
    corrupt_exif = b"II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00"
    paths = [
        _save(tmp_path / f"{i}.png", Image.new("RGB", (8, 8)), exif=corrupt_exif) for i in range(6)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        results = list(load_images(paths, workers=3))
    assert all(r.error == "" for r in results)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == len(paths)  # one per file, none swallowed by another's record
    for path, message in zip(sorted(paths), messages, strict=True):
        assert message.startswith(f"{path}: Corrupt EXIF data")


def test_letterbox_pads_wide_image_top_and_bottom_with_black(tmp_path):
    path = _save(tmp_path / "wide.png", Image.new("RGB", (64, 32), WHITE))
    pixels = load_image(path, resize="letterbox").pixels
    assert (pixels[:8] == 0).all()
    assert (pixels[8:24] == 255).all()
    assert (pixels[24:] == 0).all()


def test_letterbox_pads_tall_image_left_and_right(tmp_path):
    path = _save(tmp_path / "tall.png", Image.new("RGB", (16, 64), WHITE))
    pixels = load_image(path, resize="letterbox").pixels
    assert (pixels[:, :12] == 0).all()
    assert (pixels[:, 12:20] == 255).all()
    assert (pixels[:, 20:] == 0).all()


def _red_green_blue_strip(tmp_path: Path) -> str:
    im = Image.new("RGB", (96, 32), (255, 0, 0))
    im.paste((0, 255, 0), (32, 0, 64, 32))
    im.paste((0, 0, 255), (64, 0, 96, 32))
    return _save(tmp_path / "strip.png", im)


def test_center_crop_keeps_the_middle(tmp_path):
    pixels = load_image(_red_green_blue_strip(tmp_path), resize="center-crop").pixels
    assert np.abs(pixels.astype(int) - (0, 255, 0)).max() <= 2


def test_stretch_keeps_the_whole_image(tmp_path):
    pixels = load_image(_red_green_blue_strip(tmp_path), resize="stretch").pixels
    assert tuple(pixels[16, 0]) == (255, 0, 0)
    assert tuple(pixels[16, 16]) == (0, 255, 0)
    assert tuple(pixels[16, 31]) == (0, 0, 255)


@pytest.mark.parametrize("policy", RESIZE_POLICIES)
def test_size_and_large_downscale(tmp_path, policy):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (600, 900, 3), dtype=np.uint8))
    for name in ("big.png", "big.jpg"):
        path = _save(tmp_path / name, noise)
        assert load_image(path, size=16, resize=policy).pixels.shape == (16, 16, 3)
        pixels = load_image(path, resize=policy).pixels.astype(int)
        # Antialiasing averages random noise to mid-grey; point sampling would keep it noisy.
        content = pixels[6:26] if policy == "letterbox" else pixels
        assert abs(content.mean() - 127.5) < 10
        assert content.std() < 30


def test_invalid_arguments_raise_value_error(tmp_path):
    path = _save(tmp_path / "a.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="stretch, center-crop, letterbox"):
        load_image(path, resize="squash")
    with pytest.raises(ValueError, match="size"):
        load_image(path, size=0)
    # Raised at call time, before any iteration.
    with pytest.raises(ValueError, match="letterbox"):
        load_images([path], resize="squash")
    with pytest.raises(ValueError, match="workers"):
        load_images([path], workers=-1)


def test_a_folder_scan_takes_every_documented_format_in_any_case(tmp_path):
    suffixes = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]
    pixel = Image.new("RGB", (4, 4), (10, 20, 30))
    for suffix in suffixes:
        _save(tmp_path / f"lower.{suffix}", pixel)
        _save(tmp_path / f"UPPER.{suffix.upper()}", pixel)
    for decoy in ("notes.txt", "vector.svg", "photo.heic", "archive.png.gz", "png"):
        (tmp_path / decoy).write_bytes(b"not an image")
    paths, problems = expand_sources([str(tmp_path)])
    assert problems == []
    assert sorted(Path(p).name for p in paths) == sorted(
        [f"lower.{s}" for s in suffixes] + [f"UPPER.{s.upper()}" for s in suffixes]
    )
    assert all(load_image(p).pixels.shape == (32, 32, 3) for p in paths)


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """imgs/ with images (some upper-case suffixes), a text file, hidden files and a subfolder."""
    monkeypatch.chdir(tmp_path)
    small = Image.new("RGB", (4, 4))
    for name in (
        "b.png",
        "a.JPG",
        "sub/c.jpeg",
        "sub/deeper/D.TIFF",
        ".hidden.png",
        ".cache/e.png",
    ):
        _save(tmp_path / "imgs" / name, small)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    return tmp_path


# every image of `tree`, in the order a folder walk gives them (hidden files skipped)
TREE_IMAGES = [
    os.path.join("imgs", "a.JPG"),
    os.path.join("imgs", "b.png"),
    os.path.join("imgs", "sub", "c.jpeg"),
    os.path.join("imgs", "sub", "deeper", "D.TIFF"),
]


def test_expand_folder_recursive_sorted_filtered(tree):
    paths, problems = expand_sources(["imgs"])
    assert paths == TREE_IMAGES
    assert problems == []


def test_expand_globs(tree):
    paths, problems = expand_sources(["imgs/*.png", "imgs/**/*.jpeg", "imgs/su?"])
    assert paths == [
        os.path.join("imgs", "b.png"),  # glob skips .hidden.png
        os.path.join("imgs", "sub", "c.jpeg"),
        os.path.join("imgs", "sub", "deeper", "D.TIFF"),  # folder match is searched
    ]
    assert problems == []


def test_expand_missing_and_empty_sources(tree):
    paths, problems = expand_sources(["nope.png", "imgs/*.bmp", "empty", "imgs/*.txt"])
    assert paths == []
    assert problems == [
        "no such file, folder or matching pattern: nope.png",
        "no such file, folder or matching pattern: imgs/*.bmp",
        "no image files in folder: empty",
        "no image files match pattern: imgs/*.txt",
    ]


def test_a_folder_that_cannot_be_read_is_named_not_taken_for_empty(tree, monkeypatch):
    scandir = os.scandir

    def denied(path="."):  # as a folder without read permission (tests may run as root)
        if os.path.basename(os.fspath(path)) in ("sub", "empty"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    paths, problems = expand_sources(["imgs", "empty"])
    assert paths == TREE_IMAGES[:2]  # the files beside the unreadable subfolder
    assert problems == [
        f"cannot read folder {os.path.join('imgs', 'sub')}: Permission denied",
        "cannot read folder empty: Permission denied",
    ]


def test_expand_removes_duplicates_keeping_first(tree):
    paths, problems = expand_sources(
        ["imgs/b.png", "imgs", "./imgs/b.png", str(tree / "imgs" / "a.JPG"), "imgs/*.png"]
    )
    assert paths == [
        "imgs/b.png",
        os.path.join("imgs", "a.JPG"),
        os.path.join("imgs", "sub", "c.jpeg"),
        os.path.join("imgs", "sub", "deeper", "D.TIFF"),
    ]
    assert problems == []


def test_recursive_glob_does_not_follow_symlinked_folders(tree):
    os.symlink("..", tree / "imgs" / "sub" / "up")  # a loop back up the tree
    os.symlink("sub", tree / "imgs" / "again")  # the same files by a second route
    paths, problems = expand_sources(["imgs/**"])
    assert paths == TREE_IMAGES
    assert problems == []
    # a trailing slash asks for the folders, which are then searched
    assert expand_sources(["imgs/**/"])[0] == TREE_IMAGES[2:]
    # names that link to one file (a blob store) are inputs of their own
    os.symlink("c.jpeg", tree / "imgs" / "sub" / "link.jpeg")
    assert expand_sources(["imgs/sub/c.jpeg", "imgs/sub/link.jpeg"])[0] == [
        "imgs/sub/c.jpeg",
        "imgs/sub/link.jpeg",
    ]


def test_expand_keeps_named_file_with_any_suffix(tree):
    paths, problems = expand_sources(["imgs/notes.txt", "imgs/.hidden.png"])
    assert paths == ["imgs/notes.txt", "imgs/.hidden.png"]
    assert problems == []
    assert load_image(paths[0]).error == "not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)"


def _encoded(tmp_path: Path, fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    path = tmp_path / f"full.{fmt}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_image_is_an_error(tmp_path, fmt):
    data = _encoded(tmp_path, fmt)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[: len(data) // 2])
    result = load_image(str(path))
    assert result.pixels is None
    assert result.error == "truncated image"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b"hello, world\n" * 10, "not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)"),
    ],
    ids=["empty", "text"],
)
def test_bad_content_is_an_error(tmp_path, content, expected):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    result = load_image(str(path))
    assert (result.pixels, result.error) == (None, expected)


def test_folder_and_missing_file_are_errors(tmp_path):
    assert load_image(str(tmp_path)).error == "is a folder, not a file"
    assert load_image(str(tmp_path / "gone.png")).error == "no such file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would wait for a writer forever
    result = load_image(str(tmp_path / "pipe.png"))
    assert result.error == "not a regular file (a pipe, socket or device)"


def test_permission_denied_is_an_error(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.png", Image.new("RGB", (4, 4)))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    # chmod cannot lock out root (as in containers), so fail the open() the module makes.
    monkeypatch.setattr(images, "open", denied, raising=False)
    assert load_image(path).error == "permission denied"


@pytest.mark.parametrize("limit", [6000, 1000], ids=["warning-band", "error-band"])
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, recwarn, limit):
    path = _save(tmp_path / "bomb.png", Image.new("RGB", (100, 100)))  # 10000 pixels
    filters_before = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    result = load_image(path)
    assert result.pixels is None
    assert result.error == f"image too large (decompression-bomb limit: {limit} pixels)"
    assert warnings.filters == filters_before  # no global change left behind
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)  # at the limit is fine
    assert load_image(path).error == ""


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_load_images_keeps_order_and_mixes_good_and_bad(tmp_path, workers):
    paths, expected = [], []
    for i in range(24):
        path = tmp_path / f"{i:02d}.png"
        if i % 3 == 2:
            path.write_text("broken")
            expected.append(None)
        else:
            Image.new("L", (20, 10), i * 10).save(path)
            expected.append(i * 10)
        paths.append(str(path))

    results = list(load_images(paths, workers=workers))
    assert [r.path for r in results] == paths
    for result, value in zip(results, expected, strict=True):
        if value is None:
            assert (result.pixels, result.error) == (
                None,
                "not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)",
            )
        else:
            assert result.error == ""
            assert (result.pixels == value).all()


def test_load_images_can_stop_early(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", Image.new("L", (8, 8), i)) for i in range(50)]
    results = load_images(paths, workers=4)
    first = next(results)
    results.close()  # must not hang or decode the rest
    assert first.path == paths[0]
    assert (first.pixels == 0).all()


def test_module_does_not_import_torch():
    code = "import sys, cifarnet.tasks.images; print('torch' in sys.modules)"
    # the folder holding the cifarnet package (not the package itself, whose io/ would shadow
    # the standard library's on Python 3.10, which does not freeze io at start-up)
    env = {**os.environ, "PYTHONPATH": str(Path(images.__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr
