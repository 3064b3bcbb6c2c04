"""bench/flamegraph.py: the SVG flame graph of py-spy's collapsed stacks, on small synthetic inputs."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

from support import PYTHON, REPO

from bench.flamegraph import render

SVG = "{http://www.w3.org/2000/svg}"


def frames(svg: str) -> dict[str, tuple[float, float, int]]:
    """Frame name -> (x, width, samples), read back from each frame's tooltip and rect."""
    found = {}
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        tip = group.findtext(f"{SVG}title")
        rect = group.find(f"{SVG}rect")
        assert tip is not None and rect is not None
        name, _, rest = tip.rpartition(" (")
        found[name] = (float(rect.get("x", "")), float(rect.get("width", "")), int(rest.split()[0].replace(",", "")))
    return found


def test_widths_are_proportional_to_samples_and_the_root_spans_the_graph():
    drawn = frames(render("a;b 3\na;c 1\n", "t", width=1020))
    assert set(drawn) == {"all", "a", "b", "c"}
    assert drawn["all"][2] == drawn["a"][2] == 4
    assert drawn["all"][1] == drawn["a"][1] == 1000  # 1020 less the 10 px margins
    assert abs(drawn["b"][1] - 3 * drawn["c"][1]) < 0.02
    assert drawn["b"][0] < drawn["c"][0]  # siblings in alphabetical order, b left of c
    assert abs(drawn["c"][0] - (drawn["b"][0] + drawn["b"][1])) < 0.02


def test_callees_are_drawn_above_their_callers():
    rects = {tip: float(g.find(f"{SVG}rect").get("y")) for g in ET.fromstring(render("a;b;c 1\n", "t")).iter(f"{SVG}g")
             if (tip := g.findtext(f"{SVG}title"))}
    y = [next(v for k, v in rects.items() if k.startswith(name + " (")) for name in ("all", "a", "b", "c")]
    assert y == sorted(y, reverse=True)


def test_names_are_escaped_and_the_document_is_well_formed():
    collapsed = "<module> (app.py:1);f<T> & \"g\" (x.py:2) 5\nbad line\n\x00torn (\x00:-7) 1\n"
    svg = render(collapsed, "title <&>")
    root = ET.fromstring(svg)  # raises on bad escaping or on a character XML forbids
    assert root.findtext(f"{SVG}text") == "title <&>"
    assert {"<module> (app.py)", 'f<T> & "g" (x.py)', "\ufffdtorn (\ufffd)"} <= set(frames(svg))
    assert "6 samples" in "".join(root.itertext())


def test_frames_under_min_share_are_left_out_with_their_callees():
    collapsed = "a;big 990\na;tiny 10\na;tiny;deeper 0\n"
    assert "tiny" not in frames(render(collapsed, "t", min_share=0.02))
    assert frames(render(collapsed, "t", min_share=0.005))["tiny"][2] == 10


def test_merge_lines_joins_one_function_at_different_lines():
    collapsed = "main (m.py:9);f (x.py:1) 2\nmain (m.py:9);f (x.py:2) 3\n"
    assert frames(render(collapsed, "t"))["f (x.py)"][2] == 5
    kept = frames(render(collapsed, "t", merge_lines=False))
    assert (kept["f (x.py:1)"][2], kept["f (x.py:2)"][2]) == (2, 3)


def test_labels_are_shortened_or_dropped_when_the_frame_is_narrow():
    long, short = "a_rather_long_function_name (some/module.py)", "z (z.py)"
    svg = render(f"{long} 10\n{short} 90\nnarrow_but_kept 1\n", "t", width=1020, min_share=0)
    labels = {g.findtext(f"{SVG}title", "").rpartition(" (")[0]: g.findtext(f"{SVG}text")
              for g in ET.fromstring(svg).iter(f"{SVG}g")}
    assert labels[short] == short  # 900 px: the whole name
    assert labels[long] is not None and labels[long].endswith("..")  # 100 px: the start of the name
    assert long.startswith(labels[long][:-2]) and 5 < len(labels[long]) < len(long)
    assert labels["narrow_but_kept"] is None  # 10 px: no text at all


def test_cli_writes_the_svg(tmp_path):
    (tmp_path / "in.txt").write_text("a;b 3\na;c 1\n")
    proc = subprocess.run([PYTHON, "-m", "bench.flamegraph", str(tmp_path / "in.txt"), str(tmp_path / "out.svg"),
                           "--title", "cli & co"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    svg = (tmp_path / "out.svg").read_text()
    assert ET.fromstring(svg).findtext(f"{SVG}text") == "cli & co"
    assert set(frames(svg)) == {"all", "a", "b", "c"}
