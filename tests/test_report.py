"""The HTML report and the policy explanation."""

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from grpokit.evaluation.explain import explain_policy
from grpokit.evaluation.report import write_report


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _summary():
    return {
        "policies": {
            "grpo": {"value": 1.25, "ci_low": 1.2, "ci_high": 1.3, "per_group": {"north": 1.5, "south": 1.0}, "spend": 0.4},
            "random": {"value": 0.8, "per_group": {"north": 0.9, "south": 0.7}},
        }
    }


def _explanation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    return explain_policy(x, (x[:, 0] > 0).astype(int), ["recency", "frequency"], ["none", "10% off"])


def test_explanation_recovers_a_simple_rule():
    e = _explanation()
    assert e["fidelity"] > 0.95 and "recency" in e["rules"] and "10% off" in e["rules"]
    rng = np.random.default_rng(1)
    noise = explain_policy(rng.normal(size=(400, 2)), rng.integers(0, 4, 400), ["a", "b"], max_depth=1)
    assert noise["fidelity"] < 0.5  # a depth-1 tree cannot reproduce random decisions
    with pytest.raises(ValueError, match="feature names"):
        explain_policy(np.zeros((20, 2)), np.zeros(20), ["a"])
    with pytest.raises(ValueError, match="at least 10"):
        explain_policy(np.zeros((5, 1)), np.zeros(5), ["a"])


def test_report_is_self_contained(tmp_path):
    path = write_report(
        tmp_path / "report.html",
        title="Marketing <run>",
        summary=_summary(),
        curves={"reward": [(0, 0.1), (10, 0.5), (20, 0.9)], "value": [(0, 0.2), (20, 1.1)]},
        assignment={"north": {"none": 0.25, "10% off": 0.75}, "south": {"none": 1.0}},
        explanation=_explanation(),
        notes=["spillover off"],
    )
    text = path.read_text()
    parser = _Tags()
    parser.feed(text)
    assert parser.tags.count("svg") == 2 and "polyline" in parser.tags and parser.tags.count("table") == 3
    assert "Marketing &lt;run&gt;" in text  # escaped
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    joined = " ".join(parser.text)
    assert "1.25" in joined and "[1.20, 1.30]" in joined and "north" in joined and "fidelity" in joined


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    path = write_report(tmp_path / "report.html", title="render check", summary=_summary(), explanation=_explanation())
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1000,1400", path.as_uri()],
        check=True, timeout=120, capture_output=True,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
