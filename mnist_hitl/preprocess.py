"""Turn a drawing (or any digit picture) into the 28x28 input the model reads.

MNIST was built by scaling each digit, keeping its aspect ratio, into a 20x20
box with anti-aliasing, then placing it in a 28x28 field so that its centre of
mass sits at the centre. A drawing from a 280x280 canvas goes through the same
steps; skipping them costs about 20 points of accuracy on real drawings.

Picture files come from anyone, so decoding is bounded: a file over a size limit is
refused unread, and a picture over a pixel limit is refused from its header, before
anything is decoded (a 700 KB PNG can declare 13000x13000 pixels and take gigabytes
to decode). A picture larger than :data:`WORK_SIZE` is shrunk while it is decoded
(JPEG) or right after (box filter), so the floats of preprocessing stay small.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CANVAS_SIZE = 280
STROKE_WIDTH = 20
MNIST_SIZE = 28
DIGIT_BOX = 20
INK_THRESHOLD = 0.15
MIN_EXTENT = 0.05  # the ink must span at least 5% of the picture's longer side
# Defaults of MNIST_HITL_MAX_PICTURE_BYTES and _PIXELS (config.py): a phone photo passes (12-24 MP, 3-12 MB as
# JPEG); a 40 MP RGBA PNG, the largest picture accepted, decodes into 160 MB.
MAX_PICTURE_BYTES = 20_000_000
MAX_PICTURE_PIXELS = 40_000_000
WORK_SIZE = 1024  # a larger picture is shrunk to at most this on its longer side: the digit ends up 20x20 anyway
# Raster formats only: PIL's EPS reader would run Ghostscript on whatever it is given.
PICTURE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

Point = tuple[float, float]


class EmptyDrawingError(ValueError):
    """The picture holds no digit (nothing drawn, or only a speck)."""


class InvalidImageError(ValueError):
    """The bytes or array given are not a readable picture."""


class PictureTooLargeError(InvalidImageError):
    """The picture file or the picture it declares is over a limit; refused before decoding."""


def as_gray(image: np.ndarray) -> np.ndarray:
    """A 2-D float32 picture in [0, 1], white ink on black.

    Accepts ``uint8`` or float pictures, grey or RGB(A); a dark-on-light picture
    (judged by its border) is inverted so the ink is bright, as in MNIST.
    """
    array = np.asarray(image)
    if array.ndim == 3:
        if array.shape[2] == 4:  # RGBA: ink may live in the colour or in the alpha
            rgb = array[..., :3].astype(np.float32).mean(axis=2)
            alpha = array[..., 3].astype(np.float32)
            drawn = alpha > 0
            if drawn.any() and not drawn.all() and np.ptp(rgb[drawn]) == 0:
                array = alpha  # one colour on a transparent background: the alpha is the ink
            else:
                array = rgb * alpha / 255.0  # composite over black
        else:
            array = array[..., :3].astype(np.float32).mean(axis=2)
    if array.ndim != 2 or min(array.shape) < 1:
        raise InvalidImageError(f"expected a 2-D picture, got an array of shape {np.shape(image)}")
    gray = array.astype(np.float32)
    if gray.max(initial=0.0) > 1.0:
        gray = gray / 255.0
    gray = np.clip(gray, 0.0, 1.0)
    border = np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))
    if border.mean() > 0.5:  # a light background: ink on paper
        gray = 1.0 - gray
    return gray


def to_mnist(image: np.ndarray) -> np.ndarray:
    """Preprocess a picture MNIST-style into a 28x28 float32 array in [0, 1].

    A 28x28 picture is taken as already MNIST-style and only normalised.

    Args:
        image: the picture, any size, grey or colour, white-on-black or black-on-white.

    Returns:
        The 28x28 digit: ink scaled into a 20x20 box, centre of mass at the centre.

    Raises:
        EmptyDrawingError: nothing (or only a speck) is drawn.
    """
    gray = as_gray(image)
    ink = gray > INK_THRESHOLD
    if not ink.any():
        raise EmptyDrawingError("the drawing is empty: draw a digit first")
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if max(height, width) < max(2, MIN_EXTENT * max(gray.shape)):
        raise EmptyDrawingError("the drawing is too small to be a digit: draw it larger")
    if gray.shape == (MNIST_SIZE, MNIST_SIZE):
        return gray.astype(np.float32)

    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = Image.fromarray(crop, mode="F").resize(new_size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(scaled, dtype=np.float32), 0.0, 1.0)

    field = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    top = (MNIST_SIZE - digit.shape[0]) // 2
    left = (MNIST_SIZE - digit.shape[1]) // 2
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    cy, cx = centre_of_mass(field)
    centre = MNIST_SIZE / 2  # where MNIST's own digits have their centre of mass (measured: 13.98, 14.01)
    return translate(field, round(centre - cy), round(centre - cx))


# The two steps below are scipy.ndimage's ``center_of_mass`` and ``shift(order=0)`` by a whole number of
# pixels, computed the same way (the unit tests compare them on every bundled digit): importing
# scipy.ndimage costs every serving process (the API, each app kernel) about 26 MB.


def centre_of_mass(field: np.ndarray) -> tuple[float, float]:
    """The (row, column) centre of mass of a 2-D picture's values."""
    total = field.sum()
    rows, cols = np.ogrid[: field.shape[0], : field.shape[1]]
    return float((field * rows.astype(float)).sum() / total), float((field * cols.astype(float)).sum() / total)


def translate(field: np.ndarray, down: int, right: int) -> np.ndarray:
    """The picture moved ``down`` rows and ``right`` columns (negative: up, left), zeros where it leaves."""
    out = np.zeros_like(field)
    height, width = field.shape
    if abs(down) >= height or abs(right) >= width:
        return out
    out[max(down, 0) : height + min(down, 0), max(right, 0) : width + min(right, 0)] = field[
        max(-down, 0) : height + min(-down, 0), max(-right, 0) : width + min(-right, 0)
    ]
    return out


def render_strokes(
    strokes: Sequence[Sequence[Point]], size: int = CANVAS_SIZE, width: int = STROKE_WIDTH
) -> np.ndarray:
    """Render stroke points as the canvas shows them: white round-capped lines on black.

    Args:
        strokes: one list of (x, y) canvas points per stroke.
        size: side of the square canvas in pixels.
        width: line width in pixels.

    Returns:
        A ``uint8`` array of shape ``(size, size)``.
    """
    picture = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(picture)
    radius = width / 2
    for stroke in strokes:
        points = [(float(x), float(y)) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=width, joint="curve")
        for x, y in points:  # round caps and joints
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(picture, dtype=np.uint8)


def read_picture_file(path: str | Path, max_bytes: int = MAX_PICTURE_BYTES) -> bytes:
    """The bytes of a picture file, refusing anything but a regular file of at most ``max_bytes``.

    Raises:
        PictureTooLargeError: the file is larger than ``max_bytes`` (it is not read).
        InvalidImageError: ``path`` is a folder, a pipe or a device.
        OSError: the file cannot be opened.
    """
    # O_NONBLOCK: opening a named pipe must not wait for a writer.
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidImageError(f"{path} is not a picture file (a folder, a pipe or a device)")
        if info.st_size > max_bytes:
            raise PictureTooLargeError(_too_many_bytes(info.st_size, max_bytes))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise PictureTooLargeError(_too_many_bytes(len(data), max_bytes))
    return data


def decode_image(data: bytes, max_bytes: int = MAX_PICTURE_BYTES, max_pixels: int = MAX_PICTURE_PIXELS) -> np.ndarray:
    """Decode picture file bytes (PNG, JPEG...) into an array: grey, or RGBA for pictures with transparency.

    Args:
        data: the file's bytes.
        max_bytes: larger files are refused unread.
        max_pixels: pictures declaring more pixels are refused from their header, before decoding.

    Raises:
        PictureTooLargeError: over ``max_bytes`` or ``max_pixels``.
        InvalidImageError: anything else that is not a readable picture.
    """
    if len(data) > max_bytes:
        raise PictureTooLargeError(_too_many_bytes(len(data), max_bytes))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            opened = Image.open(io.BytesIO(data), formats=PICTURE_FORMATS)
        with opened as picture:
            width, height = picture.size
            if width * height > max_pixels:
                raise PictureTooLargeError(
                    f"the picture is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels),"
                    f" over the limit of {max_pixels:,} pixels; refused before decoding"
                )
            if width * height == 0:
                raise InvalidImageError("not a readable image: the picture has no pixels")
            return _pixels(picture)
    except InvalidImageError:
        raise
    except Image.DecompressionBombError:  # PIL's own limit, checked when it reads the header
        limit = 2 * Image.MAX_IMAGE_PIXELS
        raise PictureTooLargeError(
            f"the picture has more than {limit:,} pixels, over the limit of"
            f" {min(max_pixels, limit):,} pixels; refused before decoding"
        ) from None
    except Exception as error:  # decoders fed hostile bytes raise anything: struct.error, EOFError, IndexError...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidImageError(f"not a readable image (expected a PNG or another picture file): {message}") from error


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return f"the picture file is {size:,} bytes, over the limit of {max_bytes:,} bytes"


_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}


def _pixels(picture: Image.Image) -> np.ndarray:
    """The picture's pixels: RGBA if it has transparency, else grey; shrunk to WORK_SIZE if larger."""
    transparent = picture.mode in ("RGBA", "LA", "P", "PA")
    factor = -(-max(picture.size) // WORK_SIZE)
    if factor > 1:
        # JPEG only (a no-op elsewhere): decode at 1/2, 1/4 or 1/8 scale, never below the size asked for.
        picture.draft(None if transparent else "L", (picture.size[0] // factor, picture.size[1] // factor))
        factor = -(-max(picture.size) // WORK_SIZE)
    if factor <= 1:
        return np.asarray(picture.convert("RGBA" if transparent else "L"))
    if transparent:
        picture.load()
        return _shrunk_transparent(picture, factor)
    if picture.mode not in _REDUCIBLE:
        picture = picture.convert("L")
    return np.asarray(picture.reduce(factor).convert("L"))


def _shrunk_transparent(picture: Image.Image, factor: int) -> np.ndarray:
    """A large picture with transparency, shrunk, as the grey ink :func:`as_gray` would find at full size.

    Read in strips of whole boxes, each converted on its own: a palette picture never exists in
    full as RGBA (four times its size).
    """
    width, height = picture.size
    rows = factor * max(1, 1_000_000 // (width * factor))

    def strips():
        for top in range(0, height, rows):
            strip = picture.crop((0, top, width, min(top + rows, height)))
            yield strip if strip.mode in ("RGBA", "LA") else strip.convert("RGBA")

    # Per band, over the drawn pixels (alpha > 0) only: how many pixels have each value.
    counts = sum(np.asarray(strip.histogram(mask=strip.getchannel("A"))).reshape(-1, 256) for strip in strips())
    drawn = int(counts[-1].sum())
    if 0 < drawn < width * height and all(np.count_nonzero(band) == 1 for band in counts[:-1]):
        # one colour on a transparent background: the alpha is the ink
        return np.vstack([np.asarray(strip.getchannel("A").reduce(factor)) for strip in strips()])
    small = np.vstack([np.asarray(strip.reduce(factor), dtype=np.float32) for strip in strips()])
    composite = small[..., :-1].mean(axis=2) * small[..., -1] / 255.0  # over black, like as_gray
    return np.round(composite).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """Encode a grey picture (``uint8``, or float in [0, 1]) as PNG bytes."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_stored_png(png: bytes) -> np.ndarray:
    """A stored picture (a 28x28 grey PNG, as :func:`encode_png` writes it) as the model reads it, floats in [0, 1].

    Raises:
        InvalidImageError: not a 28x28 grey PNG.
    """
    try:
        with Image.open(io.BytesIO(png), formats=("PNG",)) as picture:
            if picture.mode == "L" and picture.size == (28, 28):
                return np.frombuffer(picture.tobytes(), dtype=np.uint8).reshape(28, 28) / np.float32(255)
    except (OSError, ValueError, Image.DecompressionBombError):
        pass
    raise InvalidImageError("not a 28x28 grey PNG, the picture an export holds")
