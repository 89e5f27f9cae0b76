"""The tutor's expected failures, each carrying its HTTP status, and the one place they become responses.

Owns: the exception classes the services, permissions and views raise (one line each, a message a
teacher can read), `json_error` (the JSON API's error body), `json_response`/`page_response` (an
exception as a response), and `ErrorMiddleware`, which maps any of them that a page view lets through.
The JSON API maps them in its endpoint decorator (`tutor.views.api.api_endpoint`) with `json_response`.
Does not own: deciding who may do what (`tutor.permissions`) or when to raise (`tutor.services`).

Not found and forbidden are also Django's Http404 and PermissionDenied, so a page shows Django's own 404
and 403 pages for them, as before.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

RETRY_AFTER_S = 15  # what a busy student is told; a live answer takes tens of seconds on 2 cores


class TutorError(Exception):
    """An expected failure; `status` is its HTTP status."""

    status = 400
    retry_after: int | None = None

    def extra(self) -> dict:
        """More fields for the JSON error body."""
        return {}


class BadQuestion(TutorError):
    """The question text cannot be used."""


class OneAtATime(TutorError):
    """You already have a question being answered: wait for it (or stop it) before asking another."""

    status = 429
    retry_after = RETRY_AFTER_S

    def extra(self) -> dict:
        return {"refusal": "one_at_a_time"}


class Refused(TutorError):
    """Not answered now, and nothing stored: too many questions this minute ("rate"), every live slot
    taken ("busy"), no model ("no_model", 503) or the database busy ("db_busy", 503). Counted per student
    in UsageCount as "refused:<refusal>" (services.asking)."""

    status = 429

    def __init__(self, message: str, *, refusal: str, retry_after: int | None = None, status=None):
        super().__init__(message)
        self.refusal = refusal
        self.retry_after = retry_after
        if status is not None:
            self.status = status

    def extra(self) -> dict:
        return {"status": "refused", "refusal": self.refusal}


class EngineUnavailable(TutorError):
    """No model is prepared or the engine would not load."""

    status = 503


class BadFixture(TutorError):
    """A line of the problem-bank fixture is not a usable problem."""


class TopicInUse(TutorError):
    """Problems still have this topic: give them another one first."""

    status = 409


class RunRefused(TutorError):
    """The run cannot be started, resumed or cancelled as asked (bad parameters, nothing selected)."""


class Conflict(TutorError):
    """The object is not in a state that allows this (e.g. a question not waiting for a choice)."""

    status = 409


class BadJoinCode(TutorError):
    """No class has this join code: check it with your teacher. 没有这个班级代码，请向老师核对。"""


class BadRoster(TutorError):
    """The class list cannot be imported as it is; `problems` says what to fix, row by row."""

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []

    def extra(self) -> dict:
        return {"problems": self.problems}


class NotFound(Http404, TutorError):
    """No such object, or one the user may not know exists."""

    status = 404


class Forbidden(PermissionDenied, TutorError):
    """The object is known, the action is not the user's to take."""

    status = 403


def json_error(status: int, message: str, /, **extra) -> JsonResponse:
    """The JSON API's error body: {"error": message, ...} with `status`."""
    response = JsonResponse(
        {"error": message, **extra}, status=status, json_dumps_params={"ensure_ascii": False}
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="suanjing"'
    return response


def json_response(exc: TutorError) -> JsonResponse:
    response = json_error(exc.status, str(exc), **exc.extra())
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


def page_response(exc: TutorError) -> HttpResponse:
    response = HttpResponse(str(exc), status=exc.status, content_type="text/plain; charset=utf-8")
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


class ErrorMiddleware:
    """A TutorError a page view did not handle becomes a plain response with its status (not found and
    forbidden are left to Django's 404 and 403 pages)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, TutorError) and not isinstance(exc, (Http404, PermissionDenied)):
            return page_response(exc)
        return None
