"""What the end-to-end tests share: the headless Chromium that drives the app's pages."""

from __future__ import annotations

import pytest

from bench.support import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser():
    """Chromium, started once per test module and closed after its last test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
