"""schemathesis from the command line, as a user runs it from the repository's root, finds nothing: without a
token, with the single token, and with a named token (whose holder any generated X-Reviewer must be)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mnist_hitl.api.tokens import token_hash
from mnist_hitl.config import Settings
from tests.support.api import running_api
from tests.support.helpers import REPO

ST = str(Path(sys.executable).parent / "st")


NAMED = "ada-token-0123456789"


@pytest.mark.parametrize("token", [None, "s3cret", NAMED])
def test_st_run_with_every_check_passes_with_and_without_a_token(home_with_model: Settings, tmp_path, token) -> None:
    extra = {"MNIST_HITL_API_TOKEN": token} if token else {}
    if token == NAMED:
        extra = {"MNIST_HITL_API_TOKENS": f"ada:{token_hash(NAMED)}"}
    with running_api(home_with_model, tmp_path / "api.log", **extra) as url:
        command = [ST, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "10", "--no-color"]
        command += ["-H", f"Authorization: Bearer {token}"] if token else []
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "failure" not in done.stdout.splitlines()[-1], done.stdout[-6000:]
