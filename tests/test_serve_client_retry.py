"""The client retries once, only where a repeat is answered as the first, when the server dropped a
kept-alive connection as the request went out (httpx.RemoteProtocolError)."""

import json

import pytest

httpx = pytest.importorskip("httpx")

from grpokit.serve import Client  # noqa: E402


def _flaky(drops: int):
    """A transport that drops the first ``drops`` requests, then answers; records every request."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content))
        if len(seen) <= drops:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if request.url.path == "/v1/decide":
            body = json.loads(request.content)
            one = {"event_id": "e1", "action": "none", "action_code": 0, "propensity": 0.9}
            return httpx.Response(200, json={"decisions": [one] * len(body["batch"])} if "batch" in body else one)
        if request.url.path == "/v1/rewards":
            return httpx.Response(200, json={"results": [{"counted": True}]})
        return httpx.Response(200, json={"counted": True, "status": "ok"})

    return httpx.Client(base_url="http://test", transport=httpx.MockTransport(handler)), seen


def test_decide_with_event_id_is_retried_once_with_the_same_body():
    http, seen = _flaky(1)
    d = Client(http=http).decide({"x": 1.0}, event_id="e1")
    assert d["event_id"] == "e1" and len(seen) == 2 and seen[0] == seen[1]


def test_decide_without_event_id_is_not_retried():
    http, seen = _flaky(1)
    with pytest.raises(httpx.RemoteProtocolError):
        Client(http=http).decide({"x": 1.0})
    assert len(seen) == 1


def test_batch_retried_only_when_every_item_has_an_event_id():
    http, seen = _flaky(1)
    with pytest.raises(httpx.RemoteProtocolError):
        Client(http=http).decide_batch([{"x": 1.0}, {"x": 2.0}], event_ids=["a", None])
    http, seen = _flaky(1)
    assert len(Client(http=http).decide_batch([{"x": 1.0}, {"x": 2.0}], event_ids=["a", "b"])) == 2
    assert len(seen) == 2 and seen[0] == seen[1]


def test_one_retry_only_and_rewards_only_when_asked():
    http, seen = _flaky(2)
    with pytest.raises(httpx.RemoteProtocolError):
        Client(http=http).decide({"x": 1.0}, event_id="e1")
    assert len(seen) == 2
    http, seen = _flaky(1)
    with pytest.raises(httpx.RemoteProtocolError):
        Client(http=http).reward("e1", 1.0)  # with aggregation "sum" a repeat would add twice
    http, seen = _flaky(1)
    assert Client(http=http, retry_rewards=True).reward("e1", 1.0)["counted"] is True and len(seen) == 2
    http, seen = _flaky(1)
    assert Client(http=http, retry_rewards=True).reward_batch([("e1", 1.0)])[0]["counted"] and len(seen) == 2
    http, seen = _flaky(1)
    assert Client(http=http).health()["status"] == "ok" and len(seen) == 2
