"""Fixtures for the SAML tests: the saml-idp npm IdP, a proxy with a SAML SP, and a headless browser.

One proxy port is reserved for the session, because the npm IdP is started with the SP's ACS URL
and audience, which contain it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from idp_kit import make_keypair  # noqa: E402
from saml_support import CHROMIUM, NpmSamlIdP  # noqa: E402

from support import free_port  # noqa: E402


@pytest.fixture(scope="session")
def saml_proxy_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def saml_sp_base(saml_proxy_port: int) -> str:
    return f"http://127.0.0.1:{saml_proxy_port}"


@pytest.fixture(scope="session")
def saml_sp_keys(session_tmp: Path) -> tuple[Path, Path]:
    return make_keypair(session_tmp / "saml-sp", "sp")


@pytest.fixture(scope="session")
def npm_idp(session_tmp: Path, saml_sp_base: str) -> Iterator[NpmSamlIdP]:
    directory = session_tmp / "npm-idp"
    directory.mkdir(exist_ok=True)
    idp = NpmSamlIdP(directory, saml_sp_base)
    yield idp
    idp.stop()


@pytest.fixture(scope="module")  # a running sync Playwright owns the thread's event loop: keep it short-lived
def chromium_browser():
    """Headless Debian chromium driven by Playwright (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()
