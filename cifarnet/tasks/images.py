"""Image input for ``cifarnet predict``: find image files and turn them into 32x32 RGB arrays.

Pure Pillow + numpy (no torch), so it can be used and tested without the model.

Every image becomes a ``uint8`` array of shape ``(size, size, 3)`` (RGB, height x width x
channel). Before resizing:

* the EXIF orientation tag is applied, so phone photos come out the right way up;
* only the first frame of an animated GIF/WebP or a multi-page TIFF is used;
* any colour mode is converted to RGB. Transparent pixels (RGBA, LA, PA, palette or single
  colour transparency) are composited over a **white** background. 16-bit images are scaled
  to 8 bits (``value >> 8``), 32-bit integer images are treated as 16-bit (clipped to
  0..65535, then ``>> 8``), and float images are scaled by 255 if all values lie in 0..1,
  otherwise clipped to 0..255.

Resize policies (``resize=``):

* ``stretch`` (default): resize the whole image to size x size, ignoring its aspect ratio.
  Nothing is cut off and nothing is added; non-square images are squashed. CIFAR's own
  images are whole scenes squeezed into 32x32, so this is the closest match.
* ``center-crop``: resize so that the shorter side is ``size``, then cut the central
  size x size square out. Keeps the aspect ratio but drops the edges of the longer side.
* ``letterbox``: resize so that the longer side is ``size``, then pad the shorter side
  equally on both sides with black (RGB 0, 0, 0) to make a square. Keeps the whole image and
  its aspect ratio, at the cost of black bars.

Downsampling uses Pillow's Lanczos filter, which is properly antialiased.

Decompression bombs follow Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (read at call time): an
image over the limit is reported as a per-file error instead of Pillow's warning, and one
over twice the limit instead of Pillow's exception. Truncated files are errors too
(``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifarnet.errors import CifarnetWarning

RESIZE_POLICIES = ("stretch", "center-crop", "letterbox")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Lanczos: Pillow widens every filter's support by the reduction factor, so all of its
# filters except NEAREST antialias; Lanczos keeps the most detail, which matters when a
# whole photo has to survive in 32x32 pixels.
_FILTER = Image.Resampling.LANCZOS
# Let Pillow first shrink very large images by an integer factor (fast box reduce) as long
# as at least 3x the final size is left for Lanczos; Pillow's docs call a gap of 3 or more
# practically indistinguishable from a pure Lanczos resize.
_REDUCING_GAP = 3.0

# Pillow's decoders of the documented formats only (MPO, a multi-picture JPEG, opens through
# JPEG's): a file's name says nothing of its contents, and some of Pillow's other decoders run
# external programs (EPS: Ghostscript) on what they are given.
DECODERS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

# warnings.catch_warnings() swaps the process-wide filter list, so two threads using it at
# once would restore each other's filters; this lock serialises our own uses of it.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)  # eq=False: == on numpy arrays has no single truth value
class ImageResult:
    """One input image: ``pixels`` on success, otherwise ``None`` and a short ``error``."""

    path: str
    pixels: np.ndarray | None
    error: str = ""


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _walk_images(folder: str, problems: list[str]) -> list[str]:
    """Image files below ``folder``, recursively, skipping hidden files and hidden folders. A
    folder that cannot be listed (no permission) adds a line to ``problems``."""

    def unreadable(exc: OSError) -> None:
        problems.append(f"cannot read folder {exc.filename}: {exc.strerror or exc}")

    found = []
    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            os.path.join(root, f) for f in files if not f.startswith(".") and _is_image_name(f)
        )
    # Sorting by path components (not the raw string) keeps a folder's contents together.
    return sorted(found, key=lambda p: Path(p).parts)


def _glob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` does not descend into
    symlinked folders (as the folder walk does not): a link back up the tree would repeat every
    file below it, or never end. Hidden names match only a pattern part starting with "."."""
    if pattern.endswith(os.sep) and pattern.rstrip(os.sep):  # "x/**/": the folders only
        return [p for p in _glob(pattern.rstrip(os.sep)) if os.path.isdir(p)]
    parts = pattern.split(os.sep)
    first_magic = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
    if "**" not in parts[first_magic:]:
        return glob.glob(pattern)
    # the literal folder before the first wildcard: "." for "**/x", "/" for "/**/x"
    root = (os.sep.join(parts[:first_magic]) or os.sep) if first_magic else "."
    wanted = parts[first_magic:]
    found = []
    for folder, dirs, files in os.walk(root):  # followlinks=False: symlinked folders not entered
        rel = os.path.relpath(folder, root)
        prefix = [] if rel == "." else rel.split(os.sep)
        linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in [d for d in dirs if d not in linked] + files:
            if _matches(wanted, [*prefix, name]):
                path = os.path.join(folder, name)
                found.append(path[2:] if root == "." and path.startswith("./") else path)
    return found


def _matches(pattern: list[str], parts: list[str]) -> bool:
    """Whether path parts match pattern parts; ``**`` matches zero or more non-hidden parts."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        for skip in range(len(parts) + 1):
            if _matches(pattern[1:], parts[skip:]):
                return True
            if skip < len(parts) and parts[skip].startswith("."):
                return False
        return False
    if not parts or (parts[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:])


def expand_sources(sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """Expand files, folders and glob patterns into image paths.

    Returns ``(paths, problems)``. ``paths`` keeps the order of ``sources`` (folder and glob
    results sorted), without duplicates. An existing file is taken as given whatever its
    suffix, so a mis-named or broken file is reported later by :func:`load_image`. Folders
    are searched recursively for files with a suffix in :data:`IMAGE_EXTENSIONS` (any case);
    hidden files and folders are skipped. Globs support ``*``, ``?``, ``[...]`` and ``**``.
    ``problems`` holds one line per source that gave no images, and per folder that could not
    be read.
    """
    paths: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        # by absolute path, not real path: names that link to one blob (a Hugging Face or DVC
        # cache) are inputs of their own
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for source in sources:
        for path in _expand_one(source, problems):
            add(path)
    return paths, problems


def _expand_one(source: str, problems: list[str]) -> list[str]:
    """The image paths one source stands for; a line in `problems` when it gives none."""
    if os.path.isdir(source):
        unreadable: list[str] = []
        found = _walk_images(source, unreadable)
        problems.extend(unreadable)
        if not found and not unreadable:
            problems.append(f"no image files in folder: {source}")
        return found
    if os.path.lexists(source):
        # Also broken links and special files: load_image reports what is wrong.
        return [source]
    matches = sorted(_glob(source))
    if not matches:
        problems.append(f"no such file, folder or matching pattern: {source}")
        return []
    found = []
    for match in matches:
        if os.path.isdir(match):
            found.extend(_walk_images(match, problems))
        elif _is_image_name(match):
            found.append(match)
    if not found:
        problems.append(f"no image files match pattern: {source}")
    return found


def _check_args(size: int, resize: str) -> None:
    if resize not in RESIZE_POLICIES:
        raise ValueError(
            f"unknown resize policy {resize!r}; choose one of: {', '.join(RESIZE_POLICIES)}"
        )
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB (alpha over white, high bit depths scaled to 8 bits)."""
    if im.mode in _16BIT_MODES or im.mode == "I":
        # Mode I usually holds 16-bit data (e.g. from PNG or TIFF): a plain convert() would
        # clip everything above 255 to white instead of scaling it. 16-bit data is shifted
        # as it is (2 bytes a pixel); wider integers are clipped first.
        values = np.asarray(im)
        if values.dtype != np.uint16:
            values = np.clip(values, 0, 65535)
        gray = Image.fromarray((values >> 8).astype(np.uint8))
        transparent = im.info.get("transparency")
        if isinstance(transparent, int):  # one gray value marked transparent: over white
            gray.paste(255, mask=Image.fromarray(((values == transparent) * 255).astype(np.uint8)))
        return gray.convert("RGB")
    if im.mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return im.convert("RGB")


def _resize(im: Image.Image, size: int, policy: str) -> Image.Image:
    width, height = im.size
    if policy == "stretch":
        return im.resize((size, size), _FILTER, reducing_gap=_REDUCING_GAP)
    if policy == "center-crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        # Resampling straight from the central square (box=) equals "shorter side to size,
        # then crop the middle" without a second lossy step.
        return im.resize(
            (size, size),
            _FILTER,
            box=(left, top, left + side, top + side),
            reducing_gap=_REDUCING_GAP,
        )
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(
        im.resize(inner, _FILTER, reducing_gap=_REDUCING_GAP),
        ((size - inner[0]) // 2, (size - inner[1]) // 2),
    )
    return canvas


def _describe(exc: BaseException) -> str:
    """One short reason for a failed load."""
    if isinstance(exc, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
        return f"image too large (decompression-bomb limit: {Image.MAX_IMAGE_PIXELS} pixels)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, EOFError) or (isinstance(exc, OSError) and "truncated" in str(exc).lower()):
        return "truncated image"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot read: {reason or type(exc).__name__}"


def load_image(path: str, size: int = 32, resize: str = "stretch") -> ImageResult:
    """Load one image as a ``(size, size, 3)`` uint8 RGB array.

    Never raises for a bad file; the reason goes into ``ImageResult.error``. Raises
    ``ValueError`` for an unknown ``resize`` policy or a ``size`` below 1.
    """
    _check_args(size, resize)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            return ImageResult(path, None, "is a folder, not a file")
        if not stat.S_ISREG(mode):  # reading a FIFO or a device could block or never end
            return ImageResult(path, None, "not a regular file (a pipe, socket or device)")
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return ImageResult(path, None, "empty file")
            # Image.open() reads only the header, so holding the lock here is cheap. It is
            # where Pillow checks the image size. Its rarer checks of GIF frame, TIFF tile or
            # ICO entry sizes during load() still fail above twice the limit, but below that
            # they only warn: filtering during load() too would serialise all decoding.
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fh, formats=DECODERS)
            with im:
                # JPEG only: let the decoder downscale by up to 8x (DCT scaling), keeping
                # at least twice the target size for the final antialiased resize.
                im.draft(None, (2 * size, 2 * size))
                im.load()  # decode here so corrupt or truncated data fails inside the try
                _exif_transpose(im, path)
                pixels = np.array(_resize(_to_rgb(im), size, resize), dtype=np.uint8)
    except Exception as exc:  # any failure of one file is that file's error, never a crash
        return ImageResult(path, None, _describe(exc))
    return ImageResult(path, pixels)


def _exif_transpose(im: Image.Image, path: str) -> None:
    """Turn `im` upright by its EXIF orientation. Pillow warns when the EXIF block is corrupt,
    without naming the file; among thousands of inputs that names nothing, so its warnings are
    issued again with the path. Under the lock: recording warnings swaps process-wide state, and
    a warning issued while another thread records would land in that thread's record."""
    if not im.info.get("exif"):  # no EXIF block to parse (TIFF tags were read at open): no lock
        ImageOps.exif_transpose(im, in_place=True)
        return
    with _WARNINGS_LOCK:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ImageOps.exif_transpose(im, in_place=True)
        for warning in caught:
            warnings.warn(f"{path}: {warning.message}", CifarnetWarning, stacklevel=3)


def load_images(
    paths: Sequence[str], size: int = 32, resize: str = "stretch", workers: int = 0
) -> Iterator[ImageResult]:
    """Load many images, yielding one :class:`ImageResult` per path in input order.

    ``workers=0`` picks ``min(8, 2 * os.cpu_count())`` threads: Pillow releases the GIL
    while decoding and threads also overlap file reads, but beyond about 8 they mostly
    contend. ``workers=1`` loads in the calling thread; more uses that many threads.
    Arguments are checked at call time, not on the first ``next()``.
    """
    _check_args(size, resize)
    if workers < 0:
        raise ValueError(f"workers must be 0 (automatic) or more, got {workers}")
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    if workers == 1:
        return (load_image(path, size, resize) for path in paths)
    return _load_threaded(paths, size, resize, workers)


def _load_threaded(
    paths: Sequence[str], size: int, resize: str, workers: int
) -> Iterator[ImageResult]:
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cifarnet-images")
    try:
        yield from executor.map(partial(load_image, size=size, resize=resize), paths)
    finally:
        # If the caller stops early, drop the queued files instead of decoding them all.
        executor.shutdown(wait=True, cancel_futures=True)
