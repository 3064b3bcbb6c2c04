"""A small SVG flame graph of py-spy's collapsed stacks (`py-spy record --format raw`), no dependencies.

    python -m bench.flamegraph IN.txt OUT.svg [--title T]

Each input line is `frame1;frame2;...;frameN COUNT`, outermost frame first. The graph is the classic
one: the root ("all") at the bottom, callees above their callers, each frame as wide as its inclusive
sample count, siblings in alphabetical order (as flamegraph.pl draws them, so the picture is stable
from run to run). Frames narrower than `min_share` of all samples are left out with their callees.
A frame's colour is a warm shade picked from a hash of its name; its tooltip gives the name, the
samples and the share. With `merge_lines` (the default) `f (x.py:12)` and `f (x.py:40)` are one frame.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

ROW = 17  # px per stack level
FONT = 12  # px
CHAR = FONT * 0.59  # average glyph width of the font, as flamegraph.pl estimates it
PAD = 10
HEAD = 52  # the title and the sample count above the graph
LINE = re.compile(r":-?\d+\)$")  # py-spy writes `name (file:line)`; bogus frames may have negative lines
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # py-spy's torn frames


@dataclass
class Frame:
    name: str
    count: int = 0
    children: dict[str, Frame] = field(default_factory=dict)


def parse(collapsed: str, *, merge_lines: bool = True) -> Frame:
    """The call tree of the collapsed stacks, counts inclusive; malformed lines are skipped."""
    root = Frame("all")
    for line in collapsed.splitlines():
        stack, _, count = line.strip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        node = root
        node.count += n
        for name in stack.split(";"):
            name = LINE.sub(")", name) if merge_lines else name
            node = node.children.setdefault(name, Frame(name))
            node.count += n
    return root


def _text(value: str) -> str:
    return escape(NOT_XML.sub("\ufffd", value), {'"': "&quot;"})


def _colour(name: str) -> str:
    digest = hashlib.blake2b(name.encode("utf-8", "replace"), digest_size=3).digest()
    red, green, blue = (205 + digest[0] * 50 // 255, digest[1] * 230 // 255, digest[2] * 55 // 255)
    return f"rgb({red},{green},{blue})"


def _label(name: str, width: float) -> str:
    fits = int((width - 6) / CHAR)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[:fits - 2] + ".."


def render(collapsed: str, title: str, *, width: int = 1200, min_share: float = 0.002,
           merge_lines: bool = True) -> str:
    """A standalone SVG document: the flame graph of `collapsed` under `title`."""
    root = parse(collapsed, merge_lines=merge_lines)
    total = root.count
    scale = (width - 2 * PAD) / total if total else 0.0
    placed: list[tuple[int, float, Frame]] = []  # (depth, x, frame)

    def place(frame: Frame, depth: int, x: float) -> None:
        placed.append((depth, x, frame))
        for name in sorted(frame.children):
            child = frame.children[name]
            if child.count >= min_share * total:
                place(child, depth + 1, x)
            x += child.count * scale

    if total:
        place(root, 0, PAD)
    depth = 1 + max((d for d, _, _ in placed), default=0)
    height = HEAD + depth * ROW + PAD
    title_px = min(FONT + 5, int((width - 2 * PAD) / (max(len(title), 1) * 0.59)))  # a long title shrinks
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Verdana, sans-serif" font-size="{FONT}">',
           '<rect width="100%" height="100%" fill="#f8f8f0"/>',
           f'<text x="{width / 2:.0f}" y="22" font-size="{title_px}" text-anchor="middle">{_text(title)}</text>',
           f'<text x="{width / 2:.0f}" y="{HEAD - 12}" text-anchor="middle" fill="#555">'
           f'{total:,} samples{"" if total else " (nothing to draw)"}</text>']
    for level, x, frame in placed:
        w = frame.count * scale
        y = height - PAD - (level + 1) * ROW
        tip = f"{frame.name} ({frame.count:,} samples, {100 * frame.count / total:.2f}%)"
        out.append(f'<g class="frame"><title>{_text(tip)}</title>'
                   f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" rx="2" '
                   f'fill="{_colour(frame.name)}"/>')
        if label := _label(frame.name, w):
            out.append(f'<text x="{x + 3:.2f}" y="{y + ROW - 5}">{_text(label)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flamegraph", description=__doc__.splitlines()[0])
    parser.add_argument("collapsed", type=Path, help="collapsed stacks (py-spy record --format raw)")
    parser.add_argument("svg", type=Path, help="the SVG to write")
    parser.add_argument("--title", help="defaults to the input file's name")
    args = parser.parse_args(argv)
    text = args.collapsed.read_text(errors="replace")
    args.svg.write_text(render(text, args.title or args.collapsed.name), encoding="utf-8")
    print(f"wrote {args.svg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
