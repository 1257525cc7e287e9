"""FeatureEncoder on lists of records: the column-at-a-time (numpy) path gives exactly what the
per-record loop gives, and every input the loop refuses is refused with the loop's own message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grpokit.policy.features import FeatureEncoder, FeatureError, IdentityEncoder


def _encoder(seed: int) -> FeatureEncoder:
    rng = np.random.default_rng(seed)
    n = 300
    df = pd.DataFrame({
        "age": rng.normal(40, 12, n),
        "region": rng.choice(["north", "south", "east", "west", "rare1", "rare2"], n, p=[.3, .3, .2, .1, .05, .05]),
        "member": rng.random(n) < 0.4,
        "visits": rng.integers(0, 50, n),
        "tier": rng.choice(["a", "b", "c"], n),
    })
    # max_categories = 4: region keeps 3 levels, the rest go to __other__
    return FeatureEncoder.infer(df, list(df.columns), max_categories=4).fit(df)


def _random_rows(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    regions = ["north", "south", "east", "west", "rare1", "rare2", "never-seen", ""]
    rows = []
    for _ in range(n):
        rows.append({
            "age": float(rng.normal(40, 30)) if rng.random() < 0.7 else int(rng.integers(-10**6, 10**6)),
            "region": str(rng.choice(regions)),
            "member": bool(rng.random() < 0.5),
            "visits": int(rng.integers(0, 80)) if rng.random() < 0.5 else float(rng.integers(0, 80)) + 0.5,
            "tier": str(rng.choice(["a", "b", "c", "d"])),
        })
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_equals_loop_bit_for_bit(seed):
    enc = _encoder(seed)
    rows = _random_rows(100 + seed, 500)
    rows[0]["age"] = 2**60 + 1  # a large int: rounds like float()
    rows[1]["age"] = -3.0e38  # the float32 edge, still accepted
    rows[2]["visits"] = 0  # an int zero
    fast = enc._transform_records_fast(rows, False)
    assert fast is not None  # these rows are plainly valid: the fast path took them
    loop = enc._transform_records_loop(rows, False)
    assert fast.dtype == loop.dtype == np.float32
    np.testing.assert_array_equal(fast, loop)
    assert fast.tobytes() == loop.tobytes()
    # __other__ is used (rare and never-seen regions), and each category block is one-hot
    names = enc.output_names
    assert fast[:, names.index("region=__other__")].sum() > 0
    block = [k for k, nm in enumerate(names) if nm.startswith("region=")]
    np.testing.assert_array_equal(fast[:, block].sum(1), np.ones(len(rows), np.float32))
    # transform() (which picks the path) gives the same too, and so does the DataFrame path
    np.testing.assert_array_equal(enc.transform(rows), loop)
    np.testing.assert_array_equal(enc.transform(pd.DataFrame(rows)), loop)


def test_fast_path_with_allow_extra_and_identity():
    enc = _encoder(3)
    rows = [{**r, "customer_id": k} for k, r in enumerate(_random_rows(7, 50))]
    fast = enc._transform_records_fast(rows, True)
    assert fast is not None
    np.testing.assert_array_equal(fast, enc._transform_records_loop(rows, True))
    ident = IdentityEncoder(["a", "b"])
    rows = [{"a": 1.25, "b": -7}, {"a": 3, "b": 0.5}]
    np.testing.assert_array_equal(ident.transform(rows), np.array([[1.25, -7], [3, 0.5]], np.float32))


def _bad_cases():
    """(mutation of row 7, expected fragment): every kind of refusal the loop has."""
    return [
        (lambda r: r.pop("age"), "missing field"),
        (lambda r: r.update(agee=1.0), "unknown field(s)"),
        (lambda r: r.update(age=float("nan")), "expected a finite number"),
        (lambda r: r.update(age=float("inf")), "expected a finite number"),
        (lambda r: r.update(age=1e39), "does not fit in float32"),
        (lambda r: r.update(age=10**400), None),  # the loop's own error (OverflowError from float())
        (lambda r: r.update(age="41"), "expected a number, got a str"),
        (lambda r: r.update(age=True), "expected a number, got a bool"),
        (lambda r: r.update(age=None), "expected a number, got missing"),
        (lambda r: r.update(member="maybe"), "expected true/false"),
        (lambda r: r.update(region=None), "missing value (a category is expected)"),
        (lambda r: r.update(region=["north"]), "expected a category label, got list"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_rows_get_the_loops_error_naming_row_and_field(case):
    enc = _encoder(4)
    mutate, fragment = _bad_cases()[case]
    rows = _random_rows(11, 40)
    mutate(rows[7])
    assert enc._transform_records_fast(rows, False) is None  # never accepted by the fast path
    with pytest.raises(Exception) as loop_err:
        enc._transform_records_loop(rows, False)
    with pytest.raises(type(loop_err.value)) as err:
        enc.transform(rows)
    assert str(err.value) == str(loop_err.value)
    if fragment is not None:
        assert isinstance(err.value, FeatureError)
        assert fragment in str(err.value) and str(err.value).startswith("row 7")
        assert err.value.row == 7


def test_loose_but_valid_values_still_encode_through_the_loop():
    """Values the fast path does not take (numpy scalars, 'yes'/'no', 0/1 booleans, int categories)
    are still accepted, by the per-record loop."""
    enc = _encoder(5)
    rows = _random_rows(12, 20)
    rows[3].update(age=np.float32(41.5), member="yes", visits=np.int64(3))
    rows[4].update(member=1, tier=7)
    assert enc._transform_records_fast(rows, False) is None
    out = enc.transform(rows)
    names = enc.output_names
    assert out[3, names.index("member")] == 1.0 and out[4, names.index("member")] == 1.0
    assert out[4, names.index("tier=__other__")] == 1.0
    np.testing.assert_array_equal(out[5:], enc._transform_records_fast(rows[5:], False))
