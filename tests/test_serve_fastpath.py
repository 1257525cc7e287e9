"""The decision service's fast paths give exactly what the general paths give: the plain-layer
forward of DeployedPolicy (bit for bit against Policy.forward), the JSON layer (orjson with the
standard library's behaviour kept for NaN, overflow and malformed bodies), the request-item check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grpokit.policy import CategoricalHead, MLPTorso, Policy
from grpokit.policy.deployed import DeployedPolicy
from grpokit.policy.features import FeatureEncoder
from grpokit.serve import jsonio
from grpokit.serve.requests import ApiError, _item, _item_checked

pytestmark = pytest.mark.serve


def _deployed(activation: str, n_groups: int = 0, seed: int = 0) -> DeployedPolicy:
    torch.manual_seed(seed)
    net = Policy(MLPTorso(3, [16, 8], activation=activation, n_groups=n_groups,
                          group_embedding_dim=2 if n_groups else 0), CategoricalHead(4))
    with torch.no_grad():  # logits far from uniform, so a changed kernel would show in the digits
        net.out.weight.mul_(300.0)
    enc = FeatureEncoder(["a", "b", "c"])
    enc.fields = [{"name": n, "type": "number", "mean": 0.5, "std": 2.0} for n in "abc"]
    meta = {"group_labels": [f"g{k}" for k in range(n_groups)]} if n_groups else {}
    return DeployedPolicy(net, meta, enc, "v1")


def _module_path(dp: DeployedPolicy, rows) -> np.ndarray:
    dist, _, _ = dp._dist(rows)
    return dist.log_probs.exp().double().numpy()


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu"])
@pytest.mark.parametrize("n", [1, 3, 1000])
def test_plain_layer_forward_is_bit_for_bit_policy_forward(activation, n):
    dp = _deployed(activation)
    assert dp._plain_layers() is not None
    rng = np.random.default_rng(n)
    rows = [{"a": float(x), "b": float(y), "c": float(z)} for x, y, z in rng.normal(0, 3, (n, 3))]
    fast = dp.probabilities(rows)
    slow = _module_path(dp, rows)
    assert fast.dtype == slow.dtype == np.float64
    assert fast.tobytes() == slow.tobytes()
    assert not np.allclose(fast, 0.25)  # a real, non-uniform distribution was compared


def test_embedding_and_restricted_policies_take_the_module_path():
    dp = _deployed("tanh", n_groups=2)
    assert dp._plain_layers() is None
    rows = [{"a": 1.0, "b": 2.0, "c": 3.0, "cohort": "g1"}]
    np.testing.assert_array_equal(dp.probabilities(rows), _module_path(dp, rows))
    dp = _deployed("tanh")
    dp.policy.head.restrict([True, False, True, True])
    assert dp._plain_layers() is None
    p = dp.probabilities([{"a": 1.0, "b": 2.0, "c": 3.0}])
    assert p[0, 1] == 0.0 and abs(p.sum() - 1) < 1e-6


def test_plain_layers_see_weights_updated_in_place():
    dp = _deployed("tanh")
    rows = [{"a": 1.0, "b": 2.0, "c": 3.0}]
    before = dp.probabilities(rows)
    with torch.no_grad():
        dp.policy.out.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    after = dp.probabilities(rows)
    assert after.tobytes() == _module_path(dp, rows).tobytes() and not np.array_equal(before, after)


def test_jsonio_loads_like_the_standard_library():
    body = b'{"context": {"a": 1.5, "b": -2, "c": "x"}, "event_id": "e1"}'
    assert jsonio.loads(body) == json.loads(body)
    for text in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}'):
        v = jsonio.loads(text)["a"]
        assert isinstance(v, float) and not np.isfinite(v) and isinstance(v, jsonio.NonFinite)
        assert repr(v) == repr(json.loads(text)["a"])
    big = b'{"a": 123456789012345678901234567890}'
    assert jsonio.loads(big) == json.loads(big) and type(jsonio.loads(big)["a"]) is int
    # a float's long fraction is not an integer: orjson reads it (the fallback is for big integers only)
    assert not jsonio._maybe_big_int(b'[0.0020791292190551758, 1e-0000000000000000000001, 12345678901234567890.5]')
    # digits inside a string after a letter or quote are a string's (an event id's hex), not a number token
    assert not jsonio._maybe_big_int(b'{"event_id": "a1234567890123456789012b", "x": "1234567890123456789012"}')
    for text in (b'1234567890123456789012', b'[-1234567890123456789012]', b'{"a":1234567890123456789012}',
                 b'{"a": 1, "b":\n 1234567890123456789012 }'):
        assert jsonio._maybe_big_int(text), text
        assert jsonio.loads(text) == json.loads(text)
    assert jsonio.loads(b'[0.0020791292190551758]') == [0.0020791292190551758]
    msgs = []
    for parse in (json.loads, jsonio.loads):
        with pytest.raises(json.JSONDecodeError) as err:
            parse(b'{"context": {"a": 1,')
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1]


def test_jsonio_dumps_refuses_non_finite_and_round_trips():
    rec = {"k": "d", "ts": 1764700000.123456, "p": [0.1, 0.2, 0.7], "u": None, "big": 2**70, "t": True}
    assert json.loads(jsonio.dumps(rec)) == rec
    # NaN and infinities only enter through a body's literals, read as NonFinite: never written as null
    for bad in (jsonio.loads(b"[NaN]")[0], jsonio.loads(b"[-Infinity]")[0], jsonio.loads(b"[1e400]")[0]):
        with pytest.raises(ValueError, match="not JSON compliant"):
            jsonio.dumps([{"context": {"a": bad}}])


@pytest.mark.parametrize("obj", [
    {"context": {"a": 1}},
    {"context": {"a": 1}, "event_id": "e", "unit_id": "u", "cohort": "c", "defer_activation": True},
    {"context": {}, "event_id": None},
])
def test_item_fast_check_equals_the_full_check(obj):
    assert _item(obj, []) == _item_checked(obj, [])


@pytest.mark.parametrize("obj", [
    {"context": {"a": 1}, "event_id": 5},  # an integer id: converted by the full check
    {"context": {"a": 1}, "event_id": ""},
    {"context": {"a": 1}, "event_id": "x" * 201},
    {"context": [1]},
    {"event_id": "e"},
    {"context": {}, "defer_activation": "yes"},
    {"context": {}, "extra": 1},
])
def test_item_unusual_shapes_go_to_the_full_check(obj):
    try:
        expected = _item_checked(obj, ["batch", 3])
    except ApiError as err:
        with pytest.raises(ApiError) as ours:
            _item(obj, ["batch", 3])
        assert ours.value.body() == err.body()
    else:
        assert _item(obj, ["batch", 3]) == expected


def _typed(obj):
    """``obj`` with every scalar tagged by its type (so 1 and 1.0 compare unequal)."""
    if isinstance(obj, dict):
        return {k: _typed(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_typed(v) for v in obj]
    return (type(obj).__name__, obj)


def test_jsonio_loads_equals_json_on_random_bodies_with_long_digit_runs():
    rng = np.random.default_rng(0)

    def scalar():
        k = rng.integers(7)
        digits = "".join(rng.choice(list("0123456789"), int(rng.integers(1, 26))))
        if k == 0:  # an integer token, maybe past 64 bits
            return ("-" if rng.random() < 0.5 else "") + (digits.lstrip("0") or "0")
        if k == 1:  # a float with a long fraction or exponent
            return f"0.{digits}" if rng.random() < 0.5 else f"1e-{digits[:3]}"
        if k == 2:  # digits inside a string (an id)
            return json.dumps("ab" + digits + "c" if rng.random() < 0.5 else digits)
        if k == 3:
            return f"{digits.lstrip('0') or '1'}.5"
        return repr(float(rng.normal()))

    for _ in range(300):
        parts = [f'"k{j}":' + (f"[{scalar()},{scalar()}]" if rng.random() < 0.3 else scalar()) for j in range(6)]
        body = ("{" + ", ".join(parts) + "}").encode()
        assert _typed(jsonio.loads(body)) == _typed(json.loads(body)), body
