"""Hostile input: picture bombs, huge files, odd ids and labels. Every refusal is one line, and nothing is stored.

The CLI runs in this process (typer's CliRunner) so that hypothesis can try many inputs in seconds;
``main`` and the console script go through the same command group.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from typer.testing import CliRunner

from mnist_hitl.cli import app
from mnist_hitl.config import Settings
from mnist_hitl.preprocess import (
    MAX_PICTURE_PIXELS,
    WORK_SIZE,
    InvalidImageError,
    PictureTooLargeError,
    decode_image,
    encode_png,
    render_strokes,
    to_mnist,
)
from mnist_hitl.store import Store

SEVEN = [[(80, 70), (200, 70), (120, 220)]]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def png_declaring(width: int, height: int, colour_type: int = 0, rows: int = 0) -> bytes:
    """A PNG whose header declares width x height 8-bit pixels (grey: 0, RGBA: 6), with ``rows`` rows of zeros.

    With every row it is a real picture (a decompression bomb: a small file, a huge picture); with
    fewer, only a decoder that goes past the header notices that the data is short.
    """
    row = b"\x00" * (1 + width * (4 if colour_type == 6 else 1))
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def invoke(*args: str):
    """Run ``mnist-hitl ARGS`` in this process; fails the test on a traceback."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in lines[0], lines[0]
    return lines[0]


def counts(home: Settings) -> dict[str, int]:
    with Store(home.db_path) as store:
        return store.counts()


# pictures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [13000, 20000])  # PIL itself warns from 89 MP and refuses from 179 MP
def test_a_picture_declaring_too_many_pixels_is_refused_from_its_header(side):
    header_only = png_declaring(side, side, colour_type=6)  # no pixel data: decoding would fail otherwise
    with pytest.raises(PictureTooLargeError, match="over the limit of 40,000,000 pixels; refused before decoding"):
        decode_image(header_only)
    with pytest.raises(PictureTooLargeError, match="over the limit of 1,000 pixels"):
        decode_image(png_declaring(40, 40, rows=40), max_pixels=1000)


def test_a_png_bomb_is_refused_by_the_cli_in_one_line_and_nothing_is_stored(home, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(13000, 13000, rows=13000))  # 169 megapixels in 160 KB
    assert bomb.stat().st_size < 1_000_000
    result = invoke("predict", str(bomb))
    assert result.exit_code == 1
    refusal = json.loads(one_line_error(result))
    assert refusal["file"] == str(bomb) and "169.0 megapixels" in refusal["error"]
    assert counts(home)["predictions"] == 0


def test_a_file_over_the_size_limit_is_refused_unread(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_HITL_MAX_PICTURE_BYTES", "1000")
    big = tmp_path / "big.png"
    big.write_bytes(encode_png(np.random.default_rng(0).integers(0, 256, (200, 200), np.uint8)))
    result = invoke("predict", str(big))
    assert result.exit_code == 1
    assert "over the limit of 1,000 bytes" in json.loads(one_line_error(result))["error"]
    assert counts(home)["predictions"] == 0


def test_a_phone_photo_of_a_digit_passes_the_default_limits(tmp_path):
    width, height = 4032, 3024  # 12 megapixels, a phone camera's default
    scale = height / 280
    ink = render_strokes(
        [[((x * scale) + (width - height) / 2, y * scale) for x, y in SEVEN[0]]], size=width, width=round(20 * scale)
    )[:height]
    paper = Image.fromarray(255 - ink).convert("RGB")  # dark ink on white paper
    buffer = io.BytesIO()
    paper.save(buffer, format="JPEG", quality=92)
    assert len(buffer.getvalue()) < 20_000_000
    decoded = decode_image(buffer.getvalue())
    assert max(decoded.shape) <= WORK_SIZE  # shrunk while decoding
    digit, reference = to_mnist(decoded), to_mnist(render_strokes(SEVEN))
    assert np.corrcoef(digit.ravel(), reference.ravel())[0, 1] > 0.9


def test_the_largest_picture_accepted_decodes_in_under_300_mb(tmp_path):
    """A 40-megapixel RGBA PNG, the most memory a picture may take: decoded and preprocessed in a fresh process."""
    side = math.isqrt(MAX_PICTURE_PIXELS)
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = render_strokes(
        [[(x * side / 280, y * side / 280) for x, y in SEVEN[0]]], size=side, width=round(20 * side / 280)
    )
    path = tmp_path / "largest.png"
    Image.fromarray(rgba).save(path, compress_level=1)
    del rgba
    probe = (
        "import sys; from pathlib import Path; from mnist_hitl.preprocess import decode_image, to_mnist\n"
        "to_mnist(decode_image(Path(sys.argv[1]).read_bytes()))\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    peak_mb = int(done.stdout) / 1024
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"


def test_broken_pictures_of_every_kind_are_invalid_image_errors():
    good = encode_png(render_strokes(SEVEN))
    for data in (
        good[: len(good) // 2],
        good[:40],
        b"GIF89a" + b"\x00" * 20,
        b"BM" + b"\xff" * 60,
        b"%!PS-Adobe-3.0 EPSF-3.0\n",
        png_declaring(0, 10),
    ):
        with pytest.raises(InvalidImageError):
            decode_image(data)


# the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["correct", "5", "-1"], 1, "label -1 is outside 0-9"),  # was read as an option
        (["correct", "12345678901234567890", "3"], 1, "no prediction with id 12345678901234567890"),
        (["confirm", "99999999999999999999"], 1, "no prediction with id 99999999999999999999"),
        (["correct", "-5", "3"], 1, "no prediction with id -5"),
        (["confirm", "0"], 1, "no prediction with id 0"),
        (["correct", "abc", "3"], 2, "prediction_id"),
        (["correct", "1"], 2, "Missing argument"),
        (["frobnicate"], 2, "No such command"),
        (["predict", "{missing}"], 1, "No such file"),
        (["predict", "{folder}"], 1, "directory"),
        (["predict", "{pipe}"], 1, "not a picture file"),  # a named pipe with no writer: refused, not waited on
        (["predict", "/dev/zero"], 1, "not a picture file"),
        (["backup", "{folder}"], 1, "is a folder"),
    ],
)
def test_bad_command_lines_get_one_line_and_a_status_of_1_or_2(home, tmp_path, args, status, message):
    os.mkfifo(tmp_path / "pipe")
    args = [arg.format(missing=tmp_path / "missing.png", folder=tmp_path, pipe=tmp_path / "pipe") for arg in args]
    result = invoke(*args)
    assert result.exit_code == status
    assert message in one_line_error(result)
    assert (counts(home)["predictions"], counts(home)["labels"]) == (0, 0)


# every input, at random ---------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    return encode_png(array)


pictures = st.one_of(
    st.binary(max_size=300),
    arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))).map(_png),
    arrays(np.uint8, (28, 28)).map(_png).flatmap(lambda png: st.integers(8, len(png)).map(lambda n: png[:n])),
    st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)).map(lambda size: png_declaring(*size)),
)
numbers = st.one_of(
    st.integers(-3, 12), st.integers(-(2**80), 2**80), st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1])
)
words = st.from_regex(r"\A-?[0-9A-Za-z_. ]{1,12}\Z").filter(lambda word: not word.startswith("--"))
ids = st.one_of(st.integers(1, 5).map(str), numbers.map(str), words)  # often one that exists
digits = st.one_of(st.integers(0, 9).map(str), numbers.map(str), words)
calls = st.one_of(
    st.tuples(st.just("predict"), pictures),
    st.tuples(st.just("correct"), ids, digits),
    st.tuples(st.just("confirm"), ids),
)


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls)
def test_any_predict_correct_or_confirm_ends_cleanly_and_changes_the_store_only_on_success(
    home_with_model, tmp_path, call
):
    command, *values = call
    if command == "predict":
        path = tmp_path / f"picture-{zlib.crc32(values[0])}.png"
        path.write_bytes(values[0])
        values = [str(path)]
    before = counts(home_with_model)
    result = invoke(command, *values)
    after = counts(home_with_model)
    assert result.exit_code in (0, 1, 2)
    event(f"{command} exits {result.exit_code}")  # --hypothesis-show-statistics: how often each was tried
    if result.exit_code == 0:
        (line,) = result.stdout.strip().splitlines()
        printed = json.loads(line)
        grown = "predictions" if command == "predict" else "labels"
        assert after[grown] == before[grown] + 1
        assert {k: v for k, v in after.items() if k != grown and k in ("predictions", "labels")} == {
            k: v for k, v in before.items() if k != grown and k in ("predictions", "labels")
        }
        assert "prediction_id" in printed
    else:
        one_line_error(result)
        assert after == before
