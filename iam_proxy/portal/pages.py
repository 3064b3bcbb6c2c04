"""The portal's HTML: plain, accessible, phone-friendly pages with inline CSS and no external assets.

Every value is escaped; every page carries a strict Content-Security-Policy with a per-response nonce
for its one style block.
"""

from __future__ import annotations

import datetime as dt
import secrets
from html import escape
from typing import Iterable
from urllib.parse import urlencode

_CSS = """
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#57606a;--line:#d0d7de;--accent:#0b5cad}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;--line:#30363d;--accent:#58a6ff}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:40rem;margin:0 auto;padding:1.5rem 1rem}
h1{font-size:1.5rem;margin:0 0 1rem}
p.lead{color:var(--muted)}
ul.choices{list-style:none;padding:0;margin:1rem 0}
ul.choices li{margin:.5rem 0}
a.button,button{display:block;width:100%;padding:.8rem 1rem;font:inherit;text-align:center;text-decoration:none;
  color:#fff;background:var(--accent);border:0;border-radius:.4rem;cursor:pointer;min-height:44px}
a.button:focus-visible,button:focus-visible{outline:3px solid var(--fg);outline-offset:2px}
dl{display:grid;grid-template-columns:minmax(7rem,max-content) 1fr;gap:.4rem 1rem;margin:1rem 0}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
ul.tags{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.3rem}
ul.tags li{border:1px solid var(--line);border-radius:1rem;padding:0 .6rem}
code{font-family:ui-monospace,monospace;overflow-wrap:anywhere}
footer{margin-top:2rem;color:var(--muted);font-size:.875rem}
"""


def page(title: str, body: str) -> tuple[str, str]:
    """The HTML document and the Content-Security-Policy that goes with it."""
    nonce = secrets.token_urlsafe(16)
    csp = (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'none'; base-uri 'none'; "
           "frame-ancestors 'none'")
    html = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta name="referrer" content="no-referrer">'
            f"<title>{escape(title)}</title><style nonce=\"{nonce}\">{_CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
    return html, csp


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).replace(microsecond=0)
    return f'<time datetime="{moment.isoformat()}">{moment.strftime("%Y-%m-%d %H:%M:%S UTC")}</time>'


def _tags(values: Iterable[str], label: str) -> str:
    items = "".join(f"<li>{escape(v)}</li>" for v in values)
    return f'<ul class="tags" aria-label="{escape(label)}">{items}</ul>' if items else "—"


def chooser(providers: list[tuple[str, str]], rd: str, auth: str | None) -> tuple[str, str]:
    """`providers`: (id, display name) pairs."""
    links = []
    for pid, name in providers:
        query = {"provider": pid, "rd": rd, **({"auth": auth} if auth else {})}
        links.append(f'<li><a class="button" href="/.iam/login?{escape(urlencode(query))}">'
                     f"Sign in with {escape(name)}</a></li>")
    body = ('<h1>Sign in</h1><p class="lead">Choose the organisation you sign in with.</p>'
            f'<ul class="choices">{"".join(links)}</ul>')
    return page("Sign in", body)


def signed_in(identity, session) -> tuple[str, str]:
    rows = [
        ("Name", escape(identity.name or "—")),
        ("Username", escape(identity.username or "—")),
        ("Email", escape(identity.email or "—")),
        ("Subject", f"<code>{escape(identity.sub)}</code>"),
        ("Issuer", f"<code>{escape(identity.iss or '—')}</code>"),
        ("Signed in with", escape(session.provider) + f" ({escape(session.protocol.upper())})"),
        ("Groups", _tags(identity.groups, "Groups")),
        ("Roles", _tags(identity.roles, "Roles")),
        ("Signed in at", _when(session.created_at)),
        ("Session expires", _when(session.expires_at)),
        ("Identity refreshed", _when(session.refreshed_at)),
    ]
    if identity.tenant:
        rows.insert(5, ("Tenant", escape(identity.tenant)))
    details = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    body = (f"<h1>Signed in as {escape(identity.name or identity.username or identity.sub)}</h1>"
            f'<dl id="identity">{details}</dl>'
            '<form method="post" action="/.iam/logout"><button type="submit">Sign out</button></form>')
    return page("Your session", body)


def logout_confirm() -> tuple[str, str]:
    body = ('<h1>Sign out?</h1><p class="lead">This ends your session here and at your identity provider.</p>'
            '<form method="post" action="/.iam/logout"><button type="submit">Sign out</button></form>')
    return page("Sign out", body)


def signed_out() -> tuple[str, str]:
    body = ('<h1>You are signed out</h1><p class="lead">Close this window, or '
            '<a href="/.iam/login">sign in again</a>.</p>')
    return page("Signed out", body)


def error(status: int, reason: str, message: str, error_id: str) -> tuple[str, str]:
    body = (f"<h1>{escape(message)}</h1>"
            f'<p class="lead">Please try again. If it keeps happening, give your administrator this error id.</p>'
            f'<dl><dt>Error id</dt><dd><code id="error-id">{escape(error_id)}</code></dd>'
            f"<dt>Reason</dt><dd><code>{escape(reason)}</code></dd>"
            f"<dt>Status</dt><dd>{status}</dd></dl>"
            '<p><a href="/.iam/login">Sign in again</a></p>')
    return page("Error", body)
