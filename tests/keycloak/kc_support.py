"""Constants shared by the Keycloak tests and their conftest (a plain module: every test folder has
a `conftest`, so `from conftest import ...` would pick whichever was imported last)."""

from __future__ import annotations

from support import REPO

ARTIFACTS = REPO / "test-artifacts" / "keycloak"
CHROMIUM = "/usr/lib/chromium/chromium"
ADMIN_PASSWORD = "admin-test-password"
SESSION_SECRET = "test-session-secret-0123456789abcdef-not-for-production"
