"""Parsing and checking request bodies: every problem is an :class:`ApiError` naming the field.

Bodies are read with a size cap (413 past ``limits.max_body_bytes``), parsed as JSON (422 when
malformed) and checked by hand, which is faster than a pydantic model on the hot path and lets
each message name the exact field (``batch[3].context.age``) and what is wrong with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from grpokit.serve import jsonio

__all__ = ["ApiError", "DecideItem", "read_json", "read_asgi_json", "parse_json", "ClientGone", "parse_decide", "parse_reward", "parse_rewards", "MAX_ID_LEN"]

MAX_ID_LEN = 200


class ApiError(Exception):
    """An answer other than 200: ``status``, a message, and where (``loc``: the path into the body)."""

    def __init__(self, status: int, message: str, loc: list | None = None, kind: str = "value_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.loc = loc
        self.kind = kind

    def body(self) -> dict:
        if self.status == 422:
            loc = ["body", *(self.loc or [])]
            return {"detail": [{"loc": loc, "msg": self.message, "type": self.kind}],
                    "error": f"{_where(self.loc or [])}: {self.message}"}
        return {"detail": self.message, "error": self.message}


def _where(loc: list) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


async def read_json(request, max_bytes: int) -> Any:
    """The request's JSON body; 413 when larger than ``max_bytes``, 422 when not JSON."""
    length = request.headers.get("content-length")
    if length is not None:
        check_length(length, max_bytes)
        body = await request.body()
    else:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"request body exceeds {max_bytes} bytes (limits.max_body_bytes)")
            chunks.append(chunk)
        body = b"".join(chunks)
    return parse_json(body)


def check_length(length: str, max_bytes: int) -> None:
    """400 for a Content-Length that is not a number, 413 past ``max_bytes``."""
    try:
        n = int(length)
    except ValueError:
        raise ApiError(400, f"bad Content-Length header {length!r}") from None
    if n > max_bytes:
        raise ApiError(413, f"request body is {n} bytes; the limit is {max_bytes} (limits.max_body_bytes)")


async def read_asgi_json(scope, receive, max_bytes: int) -> Any:
    """:func:`read_json` on a raw ASGI request (the same checks and messages)."""
    for k, v in scope["headers"]:
        if k == b"content-length":
            check_length(v.decode("latin-1"), max_bytes)
            break
    chunks, size, more = [], 0, True
    while more:
        msg = await receive()
        if msg["type"] != "http.request":  # http.disconnect
            raise ClientGone()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body exceeds {max_bytes} bytes (limits.max_body_bytes)")
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return parse_json(chunks[0] if len(chunks) == 1 else b"".join(chunks))


class ClientGone(Exception):
    """The client disconnected before its body was read."""


def parse_json(body: bytes) -> Any:
    """A body's JSON; 422 when empty or malformed."""
    if not body:
        raise ApiError(422, "empty body: send a JSON object", [], "json_invalid")
    try:
        return jsonio.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(422, f"malformed JSON: {err}", [], "json_invalid") from None


def _id(value: Any, loc: list, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(422, f"{what} must be a string (or an integer), got {type(value).__name__} {value!r}", loc,
                       "type_error")
    s = str(value)
    if not s or len(s) > MAX_ID_LEN:
        raise ApiError(422, f"{what} must have 1 to {MAX_ID_LEN} characters, got {len(s)}", loc)
    return s


@dataclass
class DecideItem:
    context: dict
    event_id: str | None
    unit_id: str | None
    cohort: str | None
    defer: bool


_ITEM_KEYS = {"context", "event_id", "unit_id", "cohort", "defer_activation"}


def _plain_id(v) -> bool:
    return v is None or type(v) is str and 0 < len(v) <= MAX_ID_LEN


def _item(obj: Any, loc: list | int) -> DecideItem:
    """The item of one body element (``loc``: its path, or its index in ``batch``, for the error)."""
    if type(obj) is dict and len(obj) == 1:  # the commonest shape: {"context": {...}}
        ctx = obj.get("context")
        if type(ctx) is dict:
            return DecideItem(ctx, None, None, None, False)
    if type(obj) is dict and obj.keys() <= _ITEM_KEYS:  # the common shape, checked in a few operations
        ctx = obj.get("context")
        eid, uid, coh = obj.get("event_id"), obj.get("unit_id"), obj.get("cohort")
        defer = obj.get("defer_activation", False)
        if (type(ctx) is dict and type(defer) is bool and _plain_id(eid) and _plain_id(uid) and _plain_id(coh)):
            return DecideItem(ctx, eid, uid, coh, defer)
    return _item_checked(obj, ["batch", loc] if type(loc) is int else loc)


def _item_checked(obj: Any, loc: list) -> DecideItem:
    if not isinstance(obj, dict):
        raise ApiError(422, f"expected an object with a 'context', got {type(obj).__name__}", loc, "type_error")
    extra = set(obj) - _ITEM_KEYS
    if extra:
        raise ApiError(422, f"unknown key(s) {sorted(extra)}; allowed: {sorted(_ITEM_KEYS)}", loc + [sorted(extra)[0]],
                       "extra_forbidden")
    if "context" not in obj:
        raise ApiError(422, "field required", loc + ["context"], "missing")
    ctx = obj["context"]
    if not isinstance(ctx, dict):
        raise ApiError(422, f"context must be an object of feature: value, got {type(ctx).__name__}",
                       loc + ["context"], "type_error")
    defer = obj.get("defer_activation", False)
    if not isinstance(defer, bool):
        raise ApiError(422, f"defer_activation must be true or false, got {defer!r}", loc + ["defer_activation"],
                       "type_error")
    return DecideItem(ctx, _id(obj.get("event_id"), loc + ["event_id"], "event_id"),
                      _id(obj.get("unit_id"), loc + ["unit_id"], "unit_id"),
                      _id(obj.get("cohort"), loc + ["cohort"], "cohort"), defer)


def parse_decide(body: Any, max_batch: int) -> tuple[list[DecideItem], bool, bool]:
    """``(items, is_batch, want_probabilities)`` of a ``/v1/decide`` body: one ``{"context": ...}`` or
    ``{"batch": [...]}``."""
    if not isinstance(body, dict):
        raise ApiError(422, f"expected a JSON object, got {type(body).__name__}", [], "type_error")
    probs = body.get("probabilities", False)
    if not isinstance(probs, bool):
        raise ApiError(422, f"probabilities must be true or false, got {probs!r}", ["probabilities"], "type_error")
    if "batch" in body:
        extra = set(body) - {"batch", "probabilities"}
        if extra:
            raise ApiError(422, f"unknown key(s) {sorted(extra)} beside 'batch'", [sorted(extra)[0]], "extra_forbidden")
        batch = body["batch"]
        if not isinstance(batch, list):
            raise ApiError(422, f"batch must be a list of {{'context': ...}} objects, got {type(batch).__name__}",
                           ["batch"], "type_error")
        if not batch:
            raise ApiError(422, "batch is empty", ["batch"])
        if len(batch) > max_batch:
            raise ApiError(413, f"batch has {len(batch)} contexts; the limit is {max_batch} (limits.max_batch)")
        return [_item(x, i) for i, x in enumerate(batch)], True, probs
    single = {k: v for k, v in body.items() if k != "probabilities"}
    return [_item(single, [])], False, probs


def _number(value: Any, loc: list, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(422, f"{what} must be a number, got {type(value).__name__} {value!r}", loc, "type_error")
    x = float(value)
    if not math.isfinite(x):
        raise ApiError(422, f"{what} must be a finite number, got {value!r}", loc)
    return x


def parse_reward(body: Any, weights: dict[str, float], loc: list | None = None) -> tuple[float, dict | None]:
    """``(value, components)`` of a reward body: ``{"reward": x}`` or ``{"components": {name: x}}``
    (value = sum of weight[name] * x, a missing weight counting 1)."""
    loc = loc or []
    if not isinstance(body, dict):
        raise ApiError(422, f"expected an object with 'reward' or 'components', got {type(body).__name__}", loc,
                       "type_error")
    allowed = {"reward", "components", "event_id"} if loc else {"reward", "components"}
    extra = set(body) - allowed
    if extra:
        raise ApiError(422, f"unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}", loc + [sorted(extra)[0]],
                       "extra_forbidden")
    has_r, has_c = "reward" in body, "components" in body
    if has_r == has_c:
        raise ApiError(422, "give exactly one of 'reward' (a number) or 'components' (an object of numbers)",
                       loc + ["reward"], "missing" if not has_r else "value_error")
    if has_r:
        return _number(body["reward"], loc + ["reward"], "reward"), None
    comps = body["components"]
    if not isinstance(comps, dict) or not comps:
        raise ApiError(422, "components must be a non-empty object of name: number", loc + ["components"], "type_error")
    clean = {str(k): _number(v, loc + ["components", k], f"component {k!r}") for k, v in comps.items()}
    return float(sum(weights.get(k, 1.0) * v for k, v in clean.items())), clean


def parse_rewards(body: Any, weights: dict[str, float], max_batch: int) -> list[tuple[str, float, dict | None]]:
    """``[(event_id, value, components)]`` of a ``/v1/rewards`` body ``{"rewards": [{"event_id", ...}]}``."""
    if not isinstance(body, dict) or set(body) != {"rewards"}:
        raise ApiError(422, "expected {'rewards': [{'event_id': ..., 'reward': ...}, ...]}", [], "type_error")
    items = body["rewards"]
    if not isinstance(items, list) or not items:
        raise ApiError(422, "rewards must be a non-empty list", ["rewards"], "type_error")
    if len(items) > max_batch:
        raise ApiError(413, f"{len(items)} rewards in one request; the limit is {max_batch} (limits.max_batch)")
    out = []
    for i, it in enumerate(items):
        loc = ["rewards", i]
        if not isinstance(it, dict) or "event_id" not in it:
            raise ApiError(422, "field required", loc + ["event_id"], "missing")
        eid = _id(it["event_id"], loc + ["event_id"], "event_id")
        value, comps = parse_reward(it, weights, loc)
        out.append((eid, value, comps))
    return out
