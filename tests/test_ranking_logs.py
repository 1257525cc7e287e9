"""Ranking logs: the schema, padded tensors from DataFrames / Parquet / CSV, and every validation error."""

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from grpokit.offline.io import LogValidationError
from grpokit.ranking.logs import RankingLog, RankingLogError, RankingSchema, read_ranking_log, validate_ranking_log

SCHEMA = RankingSchema(item="item", features=["age", "is_new"], segment="user_type")


def make_df() -> pd.DataFrame:
    """Three requests with 3, 2 and 4 candidates; rows of r1 and r2 interleaved."""
    rid = ["r7", "r7", "r1", "r7", "r1", "r3", "r3", "r3", "r3"]
    age = {"r7": 31.0, "r1": 45.0, "r3": 22.0}
    new = {"r7": 0, "r1": 1, "r3": 0}
    utype = {"r7": "new", "r1": "loyal", "r3": "new"}
    return pd.DataFrame({
        "request_id": rid,
        "item": ["a", "b", "a", "c", "b", "a", "b", "c", "d"],
        "age": [age[r] for r in rid],
        "is_new": [new[r] for r in rid],
        "user_type": [utype[r] for r in rid],
        "p_click": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "p_order": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09],
        "order_value": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0],
        "click": [0, 1, 1, 0, 0, 1, 0, 0, 1],
        "order": [0, 1, 0, 0, 0, 0, 0, 0, 1],
        "gmv": [0.0, 25.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 99.5],
        "position": [2, 1, 1, 3, 2, 1, 2, 3, 4],
    })


def test_padded_tensors_in_order_of_first_appearance():
    log = read_ranking_log(make_df(), SCHEMA)
    assert isinstance(log, RankingLog) and len(log) == 3
    assert list(log.request_ids) == ["r7", "r1", "r3"]
    assert log.scores.shape == (3, 4, 3) and log.scores.dtype == torch.float32
    assert log.labels.shape == (3, 4, 3) and log.mask.dtype == torch.bool
    assert log.mask.tolist() == [[True, True, True, False], [True, True, False, False], [True] * 4]
    assert log.n_candidates.tolist() == [3, 2, 4]
    # r7: rows 0, 1, 3 in that order; padding is zero
    assert torch.allclose(log.scores[0, :, 0], torch.tensor([0.1, 0.2, 0.4, 0.0]))
    assert torch.allclose(log.scores[1, :2, 2], torch.tensor([30.0, 50.0]))
    assert log.labels[2, 3].tolist() == [1.0, 1.0, 99.5]
    assert log.labels[1, 2:].abs().sum() == 0 and log.scores[1, 2:].abs().sum() == 0
    assert log.row_index.tolist() == [[0, 1, 3, -1], [2, 4, -1, -1], [5, 6, 7, 8]]
    assert log.position.tolist() == [[2, 1, 3, -1], [1, 2, -1, -1], [1, 2, 3, 4]]
    assert log.features.tolist() == [[31.0, 0.0], [45.0, 1.0], [22.0, 0.0]]
    assert log.feature_names == ["age", "is_new"]
    assert log.segment.tolist() == [1, 0, 1] and log.segment_labels == ["loyal", "new"]
    assert log.tasks == ["p_click", "p_order", "order_value"] and log.label_names == ["click", "order", "gmv"]
    assert log.item_ids[0].tolist() == ["a", "b", "c", None]


def test_parquet_and_csv_give_the_same_tensors(tmp_path):
    df = make_df()
    df.to_parquet(tmp_path / "log.parquet")
    df.to_csv(tmp_path / "log.csv", index=False)
    ref = read_ranking_log(df, SCHEMA)
    for name in ("log.parquet", "log.csv"):
        log = read_ranking_log(tmp_path / name, SCHEMA)
        assert list(log.request_ids) == list(ref.request_ids)
        for attr in ("scores", "labels", "mask", "position", "features", "segment"):
            assert torch.equal(getattr(log, attr), getattr(ref, attr)), (name, attr)


def test_optional_roles_default_and_off():
    df = make_df().drop(columns=["position"])
    log = read_ranking_log(df)  # default schema: no features, segment column absent under its default name
    assert log.position is None and log.segment is None and log.features.shape == (3, 0)
    log = read_ranking_log(make_df(), RankingSchema(position=None))
    assert log.position is None
    with pytest.raises(RankingLogError, match=r"'slot' \(position\)"):
        read_ranking_log(make_df(), RankingSchema(position="slot"))


def test_integer_request_ids_and_custom_tasks():
    df = pd.DataFrame({"q": [5, 5, 2, 2], "p_ctr": [0.5, 0.2, 0.1, 0.9], "score": [-1.0, 2.0, 0.0, 3.0],
                       "clk": [1, 0, 0, 1], "val": [0.0, 1.0, 2.0, 3.0]})
    schema = RankingSchema(request_id="q", tasks=["p_ctr", "score"], labels={"p_ctr": "clk", "score": "val"})
    log = read_ranking_log(df, schema)
    assert log.request_ids.tolist() == [5, 2] and log.scores.shape == (2, 2, 2)
    assert log.label_names == ["clk", "val"]
    assert log.scores[0, 0, 1] == -1.0  # a value task may be negative


def test_select_and_to():
    log = read_ranking_log(make_df(), SCHEMA)
    sub = log.select([2, 0])
    assert list(sub.request_ids) == ["r3", "r7"]
    assert torch.equal(sub.scores, log.scores[[2, 0]]) and sub.segment.tolist() == [1, 1]
    assert log.to("cpu").scores.device.type == "cpu"
    assert len(log.select(slice(0, 2))) == 2


def test_resolved_schema_reads_again():
    log = read_ranking_log(make_df(), SCHEMA)
    again = read_ranking_log(make_df(), log.schema)
    assert torch.equal(again.scores, log.scores) and log.schema.position == "position"


# ------------------------------------------------------------------------------------ errors


def _err(df, schema=SCHEMA, match=None) -> RankingLogError:
    with pytest.raises(RankingLogError, match=match) as info:
        validate_ranking_log(df, schema)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LogValidationError)
    return info.value


def test_missing_task_and_label_columns_listed():
    df = make_df().drop(columns=["p_order", "gmv"])
    e = _err(df, match=r"missing columns 'p_order' \(task prediction\), 'gmv' \(label of task 'order_value'\)")
    assert "available columns" in str(e) and "'p_click'" in str(e)
    assert e.column == "p_order"


def test_empty_input(tmp_path):
    _err(make_df().iloc[:0], match="empty")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(RankingLogError, match="empty"):
        read_ranking_log(tmp_path / "e.csv", SCHEMA)
    with pytest.raises(RankingLogError, match="unsupported file type"):
        read_ranking_log(tmp_path / "e.txt", SCHEMA)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(bad):
    df = make_df()
    df.loc[4, "order_value"] = bad
    e = _err(df, match=r"column 'order_value', row 4 \(request 'r1'\).*not finite")
    assert e.row == 4 and e.request_id == "r1" and e.column == "order_value"
    df = make_df()
    df["gmv"] = df["gmv"].astype(float)
    df.loc[[6, 7], "gmv"] = np.nan
    _err(df, match=r"column 'gmv', row 6 \(request 'r3'\).*1 more row")


def test_non_numeric_prediction():
    df = make_df()
    df["p_click"] = df["p_click"].astype(object)
    df.loc[2, "p_click"] = "n/a"
    e = _err(df, match=r"column 'p_click', row 2 \(request 'r1'\): prediction value 'n/a' is not a number")
    assert e.value == "n/a"


def test_probability_outside_unit_interval():
    df = make_df()
    df.loc[3, "p_order"] = -0.2
    e = _err(df, match=r"column 'p_order', row 3 \(request 'r7'\): prediction -0.2 is outside \[0, 1\]")
    assert e.value == -0.2
    df = make_df()
    df.loc[5, "p_click"] = 1.5
    _err(df, match=r"row 5 .*1.5 is outside \[0, 1\]")
    # order_value is not a probability: large values are fine, unless declared one
    df = make_df()
    validate_ranking_log(df, SCHEMA)
    _err(df, SCHEMA.model_copy(update={"probability_tasks": ["order_value"]}),
         match=r"column 'order_value', row 0 .*10.0 is outside")


def test_single_candidate_request():
    df = pd.concat([make_df(), make_df().iloc[[0]].assign(request_id="lonely")], ignore_index=True)
    e = _err(df, match=r"request 'lonely' \(row 9\) has a single candidate.*at least 2")
    assert e.request_id == "lonely" and e.row == 9


def test_duplicate_request_item_pair():
    df = make_df()
    df.loc[7, "item"] = "a"  # r3 has item a at row 5
    e = _err(df, match=r"item 'a' appears twice in request 'r3', at rows 5 and 7")
    assert e.row == 7
    # the same item in different requests is fine, and without an item column nothing is checked
    validate_ranking_log(make_df(), SCHEMA)
    validate_ranking_log(df, SCHEMA.model_copy(update={"item": None}))


def test_features_must_be_constant_within_request():
    df = make_df()
    df.loc[3, "age"] = 32.0
    e = _err(df, match=r"column 'age'.*request 'r7' has 31.0 at row 0 and 32.0 at row 3")
    assert e.request_id == "r7" and e.row == 3
    df = make_df()
    df.loc[8, "user_type"] = "loyal"
    _err(df, match=r"column 'user_type'.*segment.*request 'r3' has 'new' at row 5 and 'loyal' at row 8")


def test_missing_request_id_and_bad_position():
    df = make_df()
    df.loc[2, "request_id"] = None
    _err(df, match=r"column 'request_id', row 2: missing request id")
    df = make_df()
    df["position"] = df["position"].astype(float)
    df.loc[1, "position"] = 1.5
    _err(df, match=r"column 'position', row 1 .*not an integer")
    df = make_df()
    df.loc[1, "position"] = -1
    _err(df, match=r"position -1 is negative")


def test_segment_labels_order():
    schema = SCHEMA.model_copy(update={"segments": ["new", "loyal"]})
    log = validate_ranking_log(make_df(), schema)
    assert log.segment.tolist() == [0, 1, 0] and log.segment_labels == ["new", "loyal"]
    schema = SCHEMA.model_copy(update={"segments": ["new"]})
    _err(make_df(), schema, match=r"unknown segment 'loyal'")


def test_schema_validation():
    with pytest.raises(ValidationError, match=r"no label column for task \['p_add'\]"):
        RankingSchema(tasks=["p_click", "p_add"], labels={"p_click": "click"})
    with pytest.raises(ValidationError, match="labels given for unknown task"):
        RankingSchema(tasks=["p_click"])
    with pytest.raises(ValidationError, match="two roles"):
        RankingSchema(features=["p_click"])
    with pytest.raises(ValidationError, match="listed twice"):
        RankingSchema(tasks=["p_click", "p_click"], labels={"p_click": "click"})
    with pytest.raises(ValidationError, match="not among the tasks"):
        RankingSchema(probability_tasks=["p_view"])
    with pytest.raises(ValidationError, match="label columns"):
        RankingSchema(labels={"p_click": "click", "p_order": "click", "order_value": "gmv"})
