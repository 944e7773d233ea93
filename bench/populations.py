"""Shifted populations for the learning benches: drawings in hands the first model never saw.

Each is a list of 280x280 canvases (what a person draws in the app) with their digits, made
without the network and cached in ``bench/cache/population-<name>.npz``:

- ``shifted``: bundled MNIST train digits redrawn by :func:`mnist_hitl.learning.synthetic.shifted_style`
  (thicker, turned, slanted, wobbly, anywhere on the canvas), as ``bench/active_learning.py`` does;
- ``fonts``: digits typeset in the TrueType fonts matplotlib installs, at 110-200 px, turned
  ±15 degrees, thinned by up to 2 px or thickened by up to 4, blurred and moved;
- ``sklearn``: scikit-learn's 1,797 handwritten 8x8 digits (43 writers), smoothly upscaled to
  140-220 px anywhere on the canvas.

The first model (MNIST alone) reads about 71%, 85% and 90% of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CACHE = Path(__file__).parent / "cache"
NAMES = ("shifted", "fonts", "sklearn")


def shifted(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist_hitl.learning import synthetic
    from mnist_hitl.learning.data import load_bundled

    digits = load_bundled()
    chosen = np.random.default_rng(seed).choice(len(digits.y_train), count, replace=False)
    return synthetic.shifted_style(digits.x_train[chosen], seed=seed), digits.y_train[chosen]


def _font_files() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    no_plain_digits = ("STIXSiz", "STIXNonUni", "LastResort", "cmex", "cmsy", "cmmi")
    return [p for p in sorted(folder.glob("*.ttf")) if not any(part in p.name for part in no_plain_digits)]


def _typeset(font_path: Path, digit: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter, ImageFont
    from scipy import ndimage

    font = ImageFont.truetype(str(font_path), int(rng.integers(110, 200)))
    canvas = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = draw.textbbox((0, 0), str(digit), font=font)
    left = int(rng.integers(-x0 + 5, max(-x0 + 6, 275 - x1)))
    top = int(rng.integers(-y0 + 5, max(-y0 + 6, 275 - y1)))
    draw.text((left, top), str(digit), fill=255, font=font)
    centre = (left + (x0 + x1) / 2, top + (y0 + y1) / 2)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, center=centre)
    width = int(rng.integers(-2, 5))
    for _ in range(abs(width)):
        canvas = canvas.filter(ImageFilter.MaxFilter(3) if width > 0 else ImageFilter.MinFilter(3))
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))
    dy, dx = (int(v) for v in rng.integers(-20, 21, 2))
    return ndimage.shift(np.asarray(canvas), (dy, dx), order=0)


def fonts(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    files = _font_files()
    pictures, digits = [], []
    while len(digits) < count:
        digit = int(rng.integers(0, 10))
        picture = _typeset(files[int(rng.integers(0, len(files)))], digit, rng)
        if picture.max() > 0:  # thinning and blur can leave nothing of a thin glyph
            pictures.append(picture)
            digits.append(digit)
    return np.stack(pictures), np.array(digits, dtype=np.int64)


def sklearn_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pictures = []
    for small in digits.images[:count]:  # 8x8, 0-16
        side = int(rng.integers(140, 220))
        big = Image.fromarray((small / 16.0).astype(np.float32), mode="F")
        big = big.resize((side, side), Image.Resampling.BICUBIC)
        canvas = np.zeros((280, 280), dtype=np.float32)
        top, left = (int(v) for v in rng.integers(0, 280 - side + 1, 2))
        canvas[top : top + side, left : left + side] = ndimage.gaussian_filter(np.clip(np.asarray(big), 0, 1), 3)
        pictures.append((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    return np.stack(pictures), digits.target[:count].astype(np.int64)


BUILDERS = {"shifted": shifted, "fonts": fonts, "sklearn": sklearn_digits}


def population(name: str, pool: int = 800, heldout: int = 1000, seed: int = 0):
    """``(pool canvases, pool digits, held-out canvases, held-out digits)`` of a population, disjoint, shuffled."""
    path = CACHE / f"population-{name}-{pool}-{heldout}-{seed}.npz"
    if not path.exists():
        canvases, digits = BUILDERS[name](pool + heldout, seed)
        order = np.random.default_rng(seed + 1).permutation(len(digits))
        canvases, digits = canvases[order].astype(np.uint8), digits[order]
        CACHE.mkdir(exist_ok=True)
        np.savez_compressed(path, canvases=canvases, digits=digits)
    saved = np.load(path)
    canvases, digits = saved["canvases"], saved["digits"]
    return canvases[:pool], digits[:pool], canvases[pool : pool + heldout], digits[pool : pool + heldout]
