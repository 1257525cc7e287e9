"""JSON in and out of the decision service: orjson when installed (the serve extra has it), with the
standard library's exact behaviour kept for what orjson refuses.

- :func:`loads`: orjson first; a body orjson refuses (``NaN``/``Infinity`` literals, malformed text)
  or that holds an integer of 19+ digits (maybe past 64 bits, which orjson would read as a float)
  is parsed by :func:`json.loads`, so NaN still reaches the feature check
  (which names the field) and malformed JSON gets the standard library's message and position. The
  non-finite literals (and numbers that overflow a double, 1e400) come back as :class:`NonFinite` (a float subclass: every check sees the same
  float, ``repr`` included) so that :func:`dumps` can never write them.
- :func:`dumps`: compact bytes; orjson first, :func:`json.dumps` (``allow_nan=False``) for what
  orjson will not encode (a NonFinite, an integer past 64 bits): NaN and infinities raise ValueError
  as before instead of being written as ``null``.
"""

from __future__ import annotations

import json
import math

__all__ = ["loads", "dumps", "NonFinite", "HAVE_ORJSON"]

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the serve extra installs it
    _orjson = None

HAVE_ORJSON = _orjson is not None
#: bytes -> digit mask ("0" for a digit, " " for anything else): runs of 19+ digits are then found by
#: bytes.find (a C substring search; a regex such as [0-9]{19,} backtracks at every shorter run)
_DIGIT_MASK = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_RUN19 = b"0" * 19
#: what may stand right before a JSON number token (after its optional minus sign); anything else
#: before a digit run (a letter, a quote, '.', 'e', '+', a digit) means a string's or a float's digits
_NUMBER_START = frozenset(b"[,: \t\r\n")
_FLOAT_CONT = frozenset(b".eE")


def _maybe_big_int(data: bytes) -> bool:
    """Whether ``data`` may hold an integer token of 19+ digits (maybe past 64 bits, which orjson reads
    as a float where json keeps the int). Exact for tokens outside strings: a digit run counts
    unless it follows a character that cannot start a number token or is followed by a fraction or
    an exponent (then it is a float's, which both parsers read alike). Digits inside a string that
    look like a number token (after a space or a comma) count too: harmless, json decides."""
    mask = data.translate(_DIGIT_MASK)
    i = mask.find(_RUN19)
    while i >= 0:
        end = mask.find(b" ", i)
        if end < 0:
            end = len(data)
        nxt = mask.find(_RUN19, end)
        if i > 0 and data[i - 1] == 45:  # '-'
            i -= 1
        if (i == 0 or data[i - 1] in _NUMBER_START) and not (end < len(data) and data[end] in _FLOAT_CONT):
            return True
        i = nxt
    return False


class NonFinite(float):
    """NaN or an infinity read from a ``NaN``/``Infinity``/``-Infinity`` literal (orjson refuses to encode it)."""

    __slots__ = ()


def _constant(name: str) -> NonFinite:
    return NonFinite(name)  # float("NaN"), float("Infinity"), float("-Infinity")


def _float(text: str) -> float:
    x = float(text)
    return x if math.isfinite(x) else NonFinite(text)  # 1e400 overflows to inf


def loads(data: bytes | str):
    """Parsed JSON; raises :class:`json.JSONDecodeError` (or UnicodeDecodeError) as json.loads does."""
    if _orjson is not None and isinstance(data, bytes) and not _maybe_big_int(data):
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # NaN/Infinity, huge integers, or truly malformed: the standard library decides
    return json.loads(data, parse_constant=_constant, parse_float=_float)


def _std(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def dumps(obj) -> bytes:
    """Compact JSON bytes of ``obj``; ValueError on NaN/inf (as ``json.dumps(allow_nan=False)``)."""
    if _orjson is None:
        return _std(obj)
    try:
        return _orjson.dumps(obj)
    except _orjson.JSONEncodeError:
        return _std(obj)  # a NonFinite (raises ValueError here) or an int past 64 bits
