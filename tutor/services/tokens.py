"""API tokens: issuing a bearer token and finding the user it belongs to.

Owns: `issue_api_token` (only the token's hash is stored) and `user_for_token`. Does not own: the HTTP
authentication around it (`tutor.views.api.api_endpoint`).
"""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from tutor.models import ApiToken
from tutor.services import runtime


@transaction.atomic
def issue_api_token(*, user) -> str:
    """A new bearer token for `user`; only its hash is stored, so this is the one time it is shown."""
    token = "sj_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, digest=ApiToken.digest_of(token), prefix=token[3:9])
    return token


def user_for_token(token: str):
    """The active user a bearer token belongs to, or None."""
    if not token or len(token) > 200:
        return None
    found = ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(token)).first()
    if found is None or not found.user.is_active:
        return None
    now = timezone.now()
    if found.last_used is None or (now - found.last_used).total_seconds() > 60:
        with runtime.one_writer():
            ApiToken.objects.filter(pk=found.pk).update(last_used=now)
    return found.user
