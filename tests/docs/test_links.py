"""Every relative link in the docs and the README leads somewhere: the file exists, and an
`#anchor` names a heading of the page it points to (GitHub's heading slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import REPO

PAGES = sorted([*REPO.glob("docs/**/*.md"), REPO / "README.md"])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"#{1,6} (.*)", line)
        if heading:
            slug = _slug(heading.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def _links(page: Path) -> list[tuple[Path, str]]:
    out = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        out.append(((page.parent / path).resolve() if path else page, anchor))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page):
    assert _links(page) or page.name != "performance.md"  # the parser still finds links
    for target, anchor in _links(page):
        assert target.exists(), f"{page.name}: {target} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: no heading #{anchor} in {target.name}"


def test_the_slugs_are_githubs():
    assert _slug("Round five: ext_authz in every worker, and what the gRPC front door costs (2026-12-06)") == \
        "round-five-ext_authz-in-every-worker-and-what-the-grpc-front-door-costs-2026-12-06"
    assert _slug("The `jwt` authenticator") == "the-jwt-authenticator"
