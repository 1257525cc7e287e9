"""The learn / evaluate report: headline words and numbers, sections, CIs drawn; a headless-Chromium render."""

import json
import re
import shutil
import subprocess

import pytest

from grpokit.evaluation.offline_report import headline, verdict_word, write_offline_report


def _iv(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi}


def learn_summary(improvement=(0.39, 0.14, 0.64)):
    per_group = {
        "north": {"n_rows": 2700, "candidate": _iv(4.1, 3.8, 4.4), "current": _iv(3.2, 3.0, 3.4),
                  "improvement": _iv(0.9, 0.5, 1.3), "verdict": "promote"},
        "south": {"n_rows": 2300, "candidate": _iv(3.3, 3.0, 3.6), "current": _iv(3.3, 3.1, 3.5),
                  "improvement": _iv(0.0, -0.3, 0.3), "verdict": "hold"},
        "tiny": {"n_rows": 12, "skipped": "fewer than 20 rows"},
    }
    gate = {"method": "dr", "alpha": 0.05, "margin": 0.0, "candidate": _iv(3.57, 3.3, 3.8),
            "current": _iv(3.18, 3.05, 3.32), "improvement": _iv(*improvement), "verdict": "promote", "reason": "x"}
    return {
        "n_holdout": 9000, "reward": "profit", "reward_unit": "EUR profit per customer",
        "holdout": {"method": "dr", "alpha": 0.05, "learned": _iv(4.12, 3.86, 4.39),
                    "best_single": {"action": "free_shipping", **_iv(3.73, 3.52, 3.96)},
                    "logging": _iv(3.18, 3.05, 3.32), "learned_minus_best_single": _iv(0.39, 0.14, 0.64),
                    "gate": gate, "per_group": per_group},
        "verdict_line": "personalized policy beats the best single action (free_shipping) by +0.39",
        "degeneration": {"warning": None},
        "decision_mix": {"none": 0.4, "10%": 0.1, "20%": 0.1, "free_shipping": 0.4},
        "logged_mix": {"none": 0.2, "10%": 0.2, "20%": 0.25, "free_shipping": 0.35},
        "decision_mix_per_group": {"north": {"none": 0.5, "10%": 0.1, "20%": 0.1, "free_shipping": 0.3}},
        "uplift_curve": {"fraction": [0, 0.5, 1], "gain": [0, 0.3, 0.39], "random": [0, 0.195, 0.39]},
        "explanation": {"rules": "|--- is_member <= 0.50\n|   |--- class: free_shipping", "fidelity": 0.91,
                        "depth": 1, "n_leaves": 2},
        "roles": [{"column": "revenue", "role": "outcome", "kind": "number", "reason": "left out: <outcome>"}],
    }


def test_verdict_words():
    assert verdict_word(0.1, 0.5) == "PROMOTE"
    assert verdict_word(-0.1, 0.5) == "inconclusive"
    assert verdict_word(-0.5, -0.1) == "HOLD"
    assert verdict_word(0.1, 0.5, margin=0.2) == "HOLD"  # better, but not by the margin


def test_headline_numbers():
    text, word = headline(_iv(0.39, 0.14, 0.64), _iv(3.18, 3.05, 3.32), "EUR profit per customer")
    assert word == "PROMOTE"
    assert text == ("New policy: +0.39 EUR profit per customer (+12.3 %) vs the current policy, 95 % CI "
                    "[+0.14, +0.64]: PROMOTE")
    text, word = headline(_iv(-0.02, -0.2, 0.16), _iv(3.18, 3.05, 3.32), "EUR", alpha=0.1)
    assert word == "inconclusive" and "90 % CI" in text


def test_learn_report_sections(tmp_path):
    path = write_offline_report(tmp_path / "report.html", learn_summary(), kind="learn",
                                curves={"entropy": [(1, 1.3), (2, 0.9)]})
    html = path.read_text()
    assert "+0.39 EUR profit per customer (+12.3 %)" in html and "class='headline promote'" in html
    assert "Per group" in html and "inconclusive" in html and "fewer than 20 rows" in html
    assert html.count("stroke='#000'") >= 2 + 3  # CI whiskers: both usable groups + the three policies
    assert "Uplift (Qini) curve" in html and "How the policy decides" in html and "is_member" in html
    assert "40.0 %" in html and "35.0 %" in html  # decision mixes as percentages
    assert "&lt;outcome&gt;" in html  # text is escaped
    assert "0.3900" not in html  # two decimals, not four


def test_evaluate_report_and_hold_colour(tmp_path):
    s = learn_summary()["holdout"]["gate"] | {"n_rows": 3000, "reward_unit": None, "reward": "profit",
                                             "improvement": _iv(-0.4, -0.6, -0.2),
                                             "served_rule": {"epsilon": 0.05, "mode": "sample"}}
    html = write_offline_report(tmp_path / "r.html", s, kind="evaluate").read_text()
    assert "class='headline hold'" in html and "profit per decision" in html and "ε = 0.05" in html


_PROBE = """<script>window.addEventListener('load', () => {
  const over = [...document.querySelectorAll('.scroll')].filter(d => d.scrollWidth > d.clientWidth + 1).length;
  document.title = JSON.stringify({page: document.documentElement.scrollWidth, view: window.innerWidth, over});
});</script>"""


def _chromium(tmp_path, *args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1400,2400"]
    return subprocess.run([exe, *flags, *args], check=True, timeout=120, capture_output=True, text=True)


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Chromium is not installed (apt-get update && apt-get install -y chromium)")
def test_learn_report_in_headless_chromium(tmp_path):
    path = write_offline_report(tmp_path / "report.html", learn_summary(), kind="learn")
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", path.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()).stdout
    m = re.search(r"<title>(\{.*?\})</title>", dom)
    assert m, dom[:300]
    res = json.loads(m.group(1).replace("&quot;", '"'))
    assert res["page"] <= res["view"] and res["over"] == 0, res
