"""Throttles that hold across every web process: who the client is, and a fixed-window counter.

Owns: `client_ip` (the address a request came from, through SUANJING_PROXY_COUNT trusted proxies; axes
uses it too), `hit` (count one event of a kind for a key in the shared "throttle" cache, and say whether
it is over the limit) and `signup_code_ok` (the one check of a sign-up code). Does not own: what a page
says when a limit is reached (the views) or login throttling (django-axes, configured in settings).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.db import DatabaseError


def client_ip(request) -> str:
    """REMOTE_ADDR; behind SUANJING_PROXY_COUNT proxies (nginx: 1), the address the nearest trusted
    proxy saw, taken from the right of X-Forwarded-For (the left part is whatever the client sent)."""
    count = settings.SUANJING_PROXY_COUNT
    remote = _address(request.META.get("REMOTE_ADDR", ""))
    if count <= 0:
        return remote
    forwarded = [
        p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()
    ]
    if len(forwarded) < count:
        return remote
    return _address(forwarded[-count])


UNKNOWN_ADDRESS = "0.0.0.0"  # noqa: S104 - a bucket for requests without a readable address


def _address(text: str) -> str:
    """A valid IP address (the login log stores it in an address column: PostgreSQL refuses anything
    else), or one shared bucket for a missing or unreadable one (a test client, a forged header)."""
    try:
        return str(ipaddress.ip_address(text.strip()[:64]))
    except ValueError:
        return UNKNOWN_ADDRESS


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check for every login over HTTP (the login page, the admin's); a call with no
    request (a shell, `Client.login` in a test) has no client address to lock and is left to the next
    backend instead of raising."""

    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def _cache():
    return caches["throttle"]


def hit(kind: str, key: str, *, limit: int, window_s: int) -> bool:
    """Count one `kind` event for `key` in the current window of `window_s` seconds; True when this one
    is over `limit` (it is counted all the same, so hammering does not reset anything)."""
    window = int(time.time() // window_s)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    name = f"{kind}:{window}:{digest}"
    try:
        count = _incr(name, window_s)
    except DatabaseError:
        # The cache table was never made on this database (`manage.py createcachetable`): make it once.
        call_command("createcachetable", verbosity=0)
        count = _incr(name, window_s)
    return count > limit


def count(kind: str, key: str, *, window_s: int) -> int:
    """How many `kind` events `key` has in the current window (0 when the cache table is missing)."""
    window = int(time.time() // window_s)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    try:
        return int(_cache().get(f"{kind}:{window}:{digest}") or 0)
    except DatabaseError:
        return 0


TOKEN_WINDOW_S = 900


def token_guessing(request) -> bool:
    """True when this address already sent SUANJING_TOKEN_FAILURES wrong bearer tokens this window."""
    return (
        count("token-fail", client_ip(request), window_s=TOKEN_WINDOW_S)
        >= settings.SUANJING_TOKEN_FAILURES
    )


def token_failed(request) -> None:
    hit(
        "token-fail",
        client_ip(request),
        limit=settings.SUANJING_TOKEN_FAILURES,
        window_s=TOKEN_WINDOW_S,
    )


def _incr(name: str, window_s: int) -> int:
    cache = _cache()
    if cache.add(name, 1, timeout=window_s + 5):
        return 1
    try:
        return cache.incr(name)
    except ValueError:  # expired between add and incr
        cache.add(name, 1, timeout=window_s + 5)
        return 1


def signup_allowed(request) -> bool:
    """Counts a sign-up from this client; False once it made SUANJING_SIGNUPS_PER_HOUR this hour."""
    return not hit(
        "signup", client_ip(request), limit=settings.SUANJING_SIGNUPS_PER_HOUR, window_s=3600
    )


def signup_code_ok(code: str) -> bool:
    """The one check of a sign-up code (SUANJING_SIGNUP_CODE; empty: sign-up is open to anyone).
    The class feature's join codes are to be checked here too."""
    expected = settings.SUANJING_SIGNUP_CODE
    if not expected:
        return True
    return hmac.compare_digest((code or "").strip().encode(), expected.encode())
