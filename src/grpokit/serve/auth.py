"""Bearer-token auth for the decision service (constant-time comparison) and the bind rule.

Tokens: the API token from ``$GRPOKIT_API_TOKEN`` or ``auth.token_file``; the admin token (version
changes under ``/v1/admin/``) from ``$GRPOKIT_ADMIN_TOKEN`` or ``auth.admin_token_file``. Rules:

- ``/v1/health`` is open; every other endpoint needs ``Authorization: Bearer <API token>`` (the
  admin token is accepted too); ``/v1/admin/*`` needs the admin token.
- With no API token configured auth is off (local development) and the service refuses to bind a
  non-loopback address; admin endpoints then stay open only if no admin token is configured either.
- With an API token but no admin token, admin endpoints are refused (403).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from grpokit.serve.config import AuthConfig

__all__ = ["Tokens", "AuthError", "load_tokens", "is_loopback", "check_bind", "check_request"]


class AuthError(ValueError):
    """A token set-up that cannot be used, or a bind that is refused."""


@dataclass(frozen=True)
class Tokens:
    api: str | None = None
    admin: str | None = None


def _read(env: str, file: str | None, what: str) -> str | None:
    if file is not None:
        p = Path(file)
        if not p.is_file():
            raise AuthError(f"{what} file {p} does not exist")
        value = p.read_text().strip()
        if not value:
            raise AuthError(f"{what} file {p} is empty")
        return value
    value = os.environ.get(env)
    if value is not None:
        value = value.strip()
        if not value:
            raise AuthError(f"${env} is set but empty")
    return value or None


def load_tokens(cfg: AuthConfig, token_file: str | None = None, admin_token_file: str | None = None) -> Tokens:
    api = _read(cfg.token_env, token_file or cfg.token_file, "token")
    admin = _read(cfg.admin_token_env, admin_token_file or cfg.admin_token_file, "admin token")
    for name, t in (("token", api), ("admin token", admin)):
        if t is not None and len(t) < 16:
            raise AuthError(f"the {name} is {len(t)} characters; use at least 16 (e.g. 'openssl rand -hex 32')")
    if api is not None and admin is not None and hmac.compare_digest(api.encode(), admin.encode()):
        raise AuthError("the admin token must differ from the API token")
    return Tokens(api, admin)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: Tokens) -> None:
    """Refuse a non-loopback bind without an API token."""
    if not is_loopback(host) and tokens.api is None:
        raise AuthError(
            f"refusing to bind {host!r} (not a loopback address) without an API token: set $GRPOKIT_API_TOKEN "
            "or pass --token-file (and $GRPOKIT_ADMIN_TOKEN / --admin-token-file for version changes)"
        )


def _eq(given: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(given.encode(), token.encode())


def check_request(path: str, authorization: str | None, tokens: Tokens) -> tuple[int, str] | None:
    """None if the request may go on, else ``(status, message)``."""
    if path == "/v1/health":
        return None
    admin_path = path.startswith("/v1/admin/")
    if tokens.api is None and tokens.admin is None:
        return None
    given = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given = value.strip()
    if admin_path:
        if tokens.admin is None:
            return 403, "admin endpoints are disabled: no admin token is configured ($GRPOKIT_ADMIN_TOKEN)"
        if given is None:
            return 401, "missing bearer token: send 'Authorization: Bearer <admin token>'"
        if _eq(given, tokens.admin):
            return None
        if _eq(given, tokens.api):
            return 403, "this endpoint changes policy versions and needs the admin token"
        return 401, "invalid token"
    if tokens.api is None:
        return None
    if given is None:
        return 401, "missing bearer token: send 'Authorization: Bearer <token>'"
    if _eq(given, tokens.api) or _eq(given, tokens.admin):
        return None
    return 401, "invalid token"


def error_body(message: str) -> bytes:
    return json.dumps({"detail": message, "error": message}).encode()
