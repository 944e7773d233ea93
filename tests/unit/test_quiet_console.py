"""The first training's console: its progress bar and messages pass, TensorFlow's C++ log lines do not."""

from __future__ import annotations

import io
import os
import threading

from mnist_hitl.services.stack import without_absl_lines

ABSL = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"E0000 00:00:1796624527.887037   25460 node_def_util.cc:682] NodeDef mentions attribute"
    b" use_unbounded_threadpool which is not in the op definition\n"
    b"I0000 00:00:1796624527.900001   25460 cpu_feature_guard.cc:210] This TensorFlow binary is optimized\n"
)


def shown(*pieces: bytes) -> bytes:
    """What reaches the terminal when the child writes ``pieces`` one after another."""
    read_end, write_end = os.pipe()
    terminal = io.BytesIO()
    with os.fdopen(read_end, "rb") as source:
        copier = threading.Thread(target=without_absl_lines, args=(source, terminal))
        copier.start()
        for piece in pieces:
            os.write(write_end, piece)
        os.close(write_end)
        copier.join(timeout=10)
    return terminal.getvalue()


def test_absl_lines_are_left_out_and_everything_else_passes_in_order() -> None:
    bar = [b"\rtraining:   0%|          | 0/15", b"\rtraining:  53%|#####     | 8/15", b"\rtraining: 100%|##| 15/15\n"]
    written = shown(b"training the first model\n", bar[0], ABSL[:70], ABSL[70:], bar[1], bar[2], b'{"trained": true}')
    assert written == b"training the first model\n" + b"".join(bar) + b'{"trained": true}'
    assert b"absl" not in written and b"E0000" not in written


def test_a_line_that_only_looks_like_a_log_line_is_kept() -> None:
    kept = b"E2E test: 0000 digits\nWARNING: the holdout is small\n"
    assert shown(kept) == kept
