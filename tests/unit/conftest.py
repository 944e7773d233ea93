"""What the unit tests share: what makes them unit tests.

A unit test runs one function or module in this process, in seconds: it trains no model, reads no
deployed one and starts no server, so ``make test-fast`` (this folder alone) needs nothing but the
checkout. A test that needs one of those fixtures belongs to tests/integration or tests/e2e.
"""

from __future__ import annotations

import pytest

# The root conftest's fixtures that train or start something (the `model` marker's and the server's).
NOT_FOR_UNIT_TESTS = {"trained_models", "quick_models", "home_with_model", "redeploy", "postgres", "postgres_url"}


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up: no server starts for nothing
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, naming the fixtures, a unit test that asks for a model or a server (a hook of this folder only)."""
    asked = sorted(NOT_FOR_UNIT_TESTS & set(getattr(item, "fixturenames", ())))
    if asked:
        pytest.fail(f"a unit test needs no model and no server, but it uses {asked}: move it to tests/integration")
