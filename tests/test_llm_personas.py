"""The persona task and benchmark pieces (grpokit.llm.personas, grpokit.llm.benchmark, grpokit.llm.tiny)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grpokit.llm.benchmark import _median_steps, _targets, steps_to
from grpokit.llm.personas import PERSONAS, make_corpus, make_users, passes, persona_reward

pytestmark = pytest.mark.llm


def test_persona_rules():
    assert passes("brief", "w01 w02 !") and not passes("brief", "w01 w02 w03 w04") and not passes("brief", "")
    assert passes("detailed", " ".join(["w01"] * 8)) and not passes("detailed", " ".join(["w01"] * 7))
    assert passes("polite", "w01 please w02") and not passes("polite", "w01 pleasee")
    assert passes("casual", "yo w01") and not passes("casual", "w01 yo")
    assert passes("excited", "w01 !") and not passes("excited", "! w01")
    assert passes("listy", "- w01 - w02") and not passes("listy", "- w01 w02")
    assert passes("numeric", "w01 two") and not passes("numeric", "w01 w02")
    assert persona_reward(["yo w01", "yo w01"], persona=["casual", "detailed"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown persona 'nobody'"):
        passes("nobody", "w01")
    with pytest.raises(ValueError, match="2 completions but 1 persona"):
        persona_reward(["a", "b"], persona=["brief"])


def test_shares_and_sparse_base_rates():
    assert [p.share for p in PERSONAS] == [0.40, 0.20, 0.15, 0.10, 0.08, 0.05, 0.02]
    assert sum(p.share for p in PERSONAS) == pytest.approx(1.0)
    corpus = make_corpus(3000, seed=0)
    assert corpus == make_corpus(3000, seed=0)
    for p in PERSONAS:  # every style is in the corpus, none is common: sparse rewards
        rate = np.mean([passes(p.name, c) for _, c in corpus])
        assert 0.1 < rate < 0.35, (p.name, rate)
    users = make_users(350, seed=0)
    counts = {p.name: users["persona"].count(p.name) for p in PERSONAS}
    assert counts == {"brief": 140, "detailed": 70, "polite": 52, "casual": 35, "excited": 28, "listy": 18, "numeric": 7}
    assert users["history"].shape == (350, 32) and set(np.unique(users["history"])) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="n_users must be >= 7"):
        make_users(3, seed=0)


def test_steps_to_and_median():
    curve = [(0, 0.2), (10, 0.85), (20, 0.95), (30, 0.7)]
    assert steps_to(curve, 0.9) == 20 and steps_to(curve, 0.99) is None and steps_to(curve, 0.1) == 0
    assert _median_steps([10, 30, None]) == 30.0
    assert _median_steps([10, None, None]) is None


def test_targets_ratios():
    def block(s_small, final_major):
        pg = {p.name: {"steps_to_90": 100.0, "steps_to_90_of_best": 100.0, "final_reward": 0.5} for p in PERSONAS}
        for name in ("numeric", "listy"):
            pg[name] = {"steps_to_90": s_small, "steps_to_90_of_best": s_small, "final_reward": 0.5}
        pg["brief"]["final_reward"] = final_major
        return {"per_group": pg, "heldout_nll": 2.0}

    t = _targets({"grpo": block(100.0, 1.0), "pgrpo": block(50.0, 0.98)})
    assert t["smallest_personas"] == ["numeric", "listy"] and t["majority"] == "brief"
    assert t["steps_to_90_ratio_pgrpo_over_grpo"] == {"numeric": 0.5, "listy": 0.5}
    assert t["majority_final_rel_diff"] == pytest.approx(-0.02)
    t = _targets({"grpo": block(None, 1.0), "pgrpo": block(50.0, 1.0)})
    assert t["steps_to_90_ratio_pgrpo_over_grpo"]["numeric"] is None


def test_tokenizer_round_trip():
    pytest.importorskip("transformers", reason="needs the llm extra: pip install 'grpokit[llm]'")
    from grpokit.llm.personas import WORDS
    from grpokit.llm.tiny import tiny_tokenizer

    tok = tiny_tokenizer(WORDS)
    text = "yo - w01 - w02 please two !"
    ids = tok(text)["input_ids"]
    assert len(ids) == 8 and tok.unk_token_id not in ids
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    with pytest.raises(ValueError, match="without spaces"):
        tiny_tokenizer(["a b"])


def test_benchmark_end_to_end_tiny(tmp_path):
    pytest.importorskip("trl", reason="needs the llm extra (transformers, trl): pip install 'grpokit[llm]'")
    from grpokit.llm.benchmark import LLMBenchConfig, run_llm_preferences

    cfg = LLMBenchConfig(steps=2, prompts_per_step=4, eval_every=1, eval_per_topic=1, sft_steps=3, sft_corpus=64, heldout=32, n_users=40, min_history=2)
    res = run_llm_preferences(["grpo", "pgrpo", "pgrpo_discovered"], [0], cfg)
    json.dumps(res)  # valid JSON
    for m in ("grpo", "pgrpo", "pgrpo_discovered"):
        block = res["methods"][m]
        assert set(block["per_group"]) == {p.name for p in PERSONAS}
        for pg in block["per_group"].values():
            assert 0.0 <= pg["final_reward"] <= 1.0
            assert pg["curve"]["step"] == [0, 1, 2]
            assert pg["steps_to_90"] is None or pg["steps_to_90"] in (0, 1, 2)
        assert block["shares"]["numeric"] == 0.02
        assert np.isfinite(block["heldout_nll"])
    assert res["methods"]["pgrpo_discovered"]["groups_found"][0]["n_cohorts"] >= 2
    with pytest.raises(ValueError, match="unknown method"):
        run_llm_preferences(["ppo"], [0], cfg)
