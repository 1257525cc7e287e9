"""The frontier plot's labels: placed deterministically, never over one another."""

import re

from grpokit.evaluation.report import _place_labels, frontier_svg


def _boxes(svg: str, char_w: float = 5.0, line_h: float = 10.0):
    out = []
    for m in re.finditer(r"<text x='([-\d.]+)' y='([-\d.]+)' font-size='9' fill='[^']*'( text-anchor='end')?>([^<]*)<", svg):
        x, y, end, label = float(m[1]), float(m[2]), bool(m[3]), m[4]
        w = char_w * len(label)
        x0 = x - w if end else x
        out.append((label, (x0, y - line_h + 2, x0 + w, y + 2)))
    return out


def _overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_crowded_labels_do_not_overlap_and_are_deterministic():
    # five objective points, a baseline and a reference almost on one spot: the old layout drew every label at (x + 6, y - 5)
    pts = [{"label": f"1:0.{i}:0", "x": 1.0 + 0.001 * i, "y": 12.0 + 0.002 * i, "kind": "objective", "series": "a"} for i in range(5)]
    pts += [{"label": "t_learner", "x": 1.0, "y": 12.0, "kind": "baseline"},
            {"label": "oracle", "x": 1.002, "y": 12.001, "kind": "reference"},
            {"label": "no_offer", "x": 0.0, "y": 9.0, "kind": "reference"}]
    svg = frontier_svg(pts)
    boxes = _boxes(svg)
    assert sorted(lbl for lbl, _ in boxes) == sorted(p["label"] for p in pts)
    for i, (la, a) in enumerate(boxes):
        for lb, b in boxes[i + 1:]:
            assert not _overlaps(a, b), (la, lb, a, b)
    assert frontier_svg(pts) == svg  # deterministic


def test_a_lone_label_keeps_the_default_spot():
    [(x, y, anchor)] = _place_labels(["grpo"], [(100.0, 200.0)], (0, 0, 760, 420))
    assert (x, y, anchor) == (106.0, 195.0, "")
    # a second mark (placed first: it is higher) right where the first label would go moves that label elsewhere
    places = _place_labels(["grpo", "b"], [(100.0, 200.0), (112.0, 192.0)], (0, 0, 760, 420))
    assert places[1] == (118.0, 187.0, "") and places[0] != (106.0, 195.0, "")
