"""Hypothesis strategies for the edge's property tests (unit and live)."""

from __future__ import annotations

from hypothesis import strategies as st

from iam_proxy.core.header_safety import IDENTITY_HEADERS

IDENTITY = sorted(IDENTITY_HEADERS)


@st.composite
def identity_spellings(draw) -> str:
    """Any spelling a WSGI/CGI backend reads as one of the identity headers: any case, and `_` or
    `.` wherever the name has `-`."""
    name = draw(st.sampled_from(IDENTITY))
    out = []
    for char in name:
        if char == "-":
            out.append(draw(st.sampled_from("-_.")))
        else:
            out.append(char.upper() if draw(st.booleans()) else char)
    return "".join(out)
