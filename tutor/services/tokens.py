"""API tokens: issuing a bearer token, finding the user it belongs to, and revoking tokens.

Owns: `issue_api_token` (only the token's hash is stored; it expires after SUANJING_TOKEN_DAYS),
`check_token` / `user_for_token` (an expired or revoked token is refused, with the reason) and
`revoke_tokens`. Does not own: the HTTP authentication around it (`tutor.views.api.api_endpoint`) or the
admin's list of tokens (`tutor.admin.ApiTokenAdmin`).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tutor.models import ApiToken
from tutor.services import runtime


@transaction.atomic
def issue_api_token(*, user, days: int | None = None) -> str:
    """A new bearer token for `user`, valid for `days` (default SUANJING_TOKEN_DAYS; 0: no expiry); only
    its hash is stored, so this is the one time it is shown."""
    days = settings.SUANJING_TOKEN_DAYS if days is None else days
    token = "sj_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(
        user=user,
        digest=ApiToken.digest_of(token),
        prefix=token[3:9],
        expires=timezone.now() + timedelta(days=days) if days > 0 else None,
    )
    return token


def check_token(token: str) -> tuple[object | None, str]:
    """(the active user a bearer token belongs to, "") or (None, why it is refused)."""
    if not token or len(token) > 200:
        return None, "invalid or unknown token"
    found = ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(token)).first()
    if found is None:
        return None, "invalid or unknown token"
    now = timezone.now()
    if found.revoked is not None:
        return None, "this token was revoked: ask for a new one"
    if found.expires is not None and found.expires <= now:
        return None, f"this token expired on {found.expires:%Y-%m-%d}: ask for a new one"
    if not found.user.is_active:
        return None, "this account is disabled"
    if found.last_used is None or (now - found.last_used).total_seconds() > 60:
        with runtime.one_writer():
            ApiToken.objects.filter(pk=found.pk).update(last_used=now)
    return found.user, ""


def user_for_token(token: str):
    """The active user a bearer token belongs to, or None (unknown, expired or revoked)."""
    return check_token(token)[0]


def revoke_tokens(queryset) -> int:
    """Revoke the tokens of `queryset` not revoked yet (they stop working at once); how many."""
    with runtime.one_writer():
        return queryset.filter(revoked__isnull=True).update(revoked=timezone.now())
