"""Benchmark: the peak memory of decoding and preprocessing the largest pictures accepted, and of refusing bombs.

Writes pictures at the default pixel limit (MNIST_HITL_MAX_PICTURE_PIXELS, 40 MP) in the formats
that decode largest (RGBA, palette, RGB and grey PNG, RGB JPEG), plus a 13000x13000 PNG bomb, then
decodes and preprocesses each in a fresh process (``decode_image`` + ``to_mnist``, what
``mnist-hitl predict`` does before inference) and prints that process' peak RSS and wall time.
With ``--home`` pointing at a home with a deployed model, also runs ``mnist-hitl predict`` on
each and prints its peak RSS. Prints figures; asserts nothing.

    .venv/bin/python bench/big_picture.py [--home DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from support import write_results

from mnist_hitl.preprocess import MAX_PICTURE_PIXELS, render_strokes

# VmHWM, the peak RSS of this process' own memory: ru_maxrss would also count the parent's, inherited over exec.
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
PROBE = """
import sys, time
from pathlib import Path
from mnist_hitl.preprocess import decode_image, to_mnist, InvalidImageError
start = time.perf_counter()
try:
    to_mnist(decode_image(Path(sys.argv[1]).read_bytes()))
    outcome = "accepted"
except InvalidImageError as error:
    outcome = "refused: " + str(error)[:60]
print(PEAK, time.perf_counter() - start, outcome, sep="|")
""".replace("PEAK", PEAK)


def _digit(side: int) -> np.ndarray:
    """A 7 drawn across a side x side picture, white on black, ``uint8``."""
    scale = side / 280
    return render_strokes(
        [[(80 * scale, 70 * scale), (200 * scale, 70 * scale), (120 * scale, 220 * scale)]],
        size=side,
        width=max(1, round(20 * scale)),
    )


def _bomb_png(side: int) -> bytes:
    """A grey PNG of side x side black pixels, compressed row by row (small file, huge picture)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    packer, row, parts = zlib.compressobj(9), b"\x00" * (side + 1), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def pictures(folder: Path) -> dict[str, Path]:
    side = math.isqrt(MAX_PICTURE_PIXELS)
    ink = _digit(side)
    made = {}

    def save(name: str, image: Image.Image, fmt: str, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        (folder / name).write_bytes(buffer.getvalue())
        made[name] = folder / name

    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = ink
    save(f"rgba_{side}.png", Image.fromarray(rgba), "PNG", compress_level=1)
    del rgba
    save(f"palette_{side}.png", Image.fromarray(255 - ink).convert("P"), "PNG", compress_level=1)
    save(f"rgb_{side}.png", Image.fromarray(ink).convert("RGB"), "PNG", compress_level=1)
    save(f"grey_{side}.png", Image.fromarray(ink), "PNG", compress_level=1)
    save(f"photo_{side}.jpg", Image.fromarray(255 - ink).convert("RGB"), "JPEG", quality=90)
    (folder / "bomb_13000.png").write_bytes(_bomb_png(13000))
    made["bomb_13000.png"] = folder / "bomb_13000.png"
    return made


CLI = """
import atexit, sys
atexit.register(lambda: print("peak_kb", PEAK, file=sys.stderr))
from mnist_hitl.cli import main
sys.argv = ["mnist-hitl", "predict", sys.argv[1]]
main()
""".replace("PEAK", PEAK)


def _predict_peak_mb(home: Path, picture: Path) -> tuple[int, str]:
    """Peak RSS of ``mnist-hitl predict PICTURE`` (the console script's ``main``, reporting VmHWM at exit)."""
    env = {**os.environ, "MNIST_HITL_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", CLI, str(picture)], env=env, capture_output=True, text=True, check=False
    )
    peak = next(line for line in done.stderr.splitlines() if line.startswith("peak_kb"))
    return round(int(peak.split()[1]) / 1024), ("accepted" if done.returncode == 0 else "refused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home with a deployed model: also measure `mnist-hitl predict`")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="mnist-hitl-big-") as folder:
        for name, path in pictures(Path(folder)).items():
            done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
            peak_kb, seconds, outcome = done.stdout.strip().split("|", 2)
            figures[name] = {
                "file_mb": round(path.stat().st_size / 1e6, 2),
                "peak_rss_mb": round(int(peak_kb) / 1024),
                "seconds": round(float(seconds), 2),
                "outcome": outcome,
            }
            if args.home:
                peak, outcome = _predict_peak_mb(args.home, path)
                figures[name].update(cli_predict_peak_rss_mb=peak, cli_outcome=outcome)
        baseline = subprocess.run(
            [sys.executable, "-c", f"import mnist_hitl.preprocess; print({PEAK})"],
            capture_output=True,
            text=True,
            check=True,
        )
    figures["imports_only"] = {"peak_rss_mb": round(int(baseline.stdout) / 1024)}
    for name, values in figures.items():
        print(f"{name:<24} {json.dumps(values)}")
    write_results("big_picture", figures)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"{'total_seconds':<24} {time.perf_counter() - started:.1f}")
