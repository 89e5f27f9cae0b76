"""The JSON API (documented in docs/api.md; OpenAPI schema at /api/openapi.json).

Authentication: the browser session, or `Authorization: Bearer <token>` (`manage.py api_token`).
Session calls that change something need the CSRF token; bearer calls are exempt (no cookie to ride on).
Errors are JSON: {"error": "...", "detail": "..."} with the right status code.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import wraps

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from tutor import errors, openapi, permissions, throttle
from tutor.forms import BankFilterForm
from tutor.models import FollowUp, Problem, Question, Solution
from tutor.services import asking, live, steps, tokens
from tutor.services.text import MAX_QUESTION_CHARS

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


error = errors.json_error  # {"error": message, ...} with the status (and WWW-Authenticate on 401)


def _reject_csrf(request: HttpRequest) -> HttpResponse | None:
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})


def api_endpoint(*methods: str) -> Callable:
    """Method check, then bearer or session authentication (with CSRF for session writes); a TutorError
    the view raises (not found, forbidden, bad question, one at a time ...) is answered by
    `errors.json_response` with its status."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if any(isinstance(v, int) and v > MAX_ID for v in kwargs.values()):
                return error(404, "no such object")
            if request.method not in methods:
                response = error(405, f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            header = request.headers.get("Authorization")
            if header is not None:
                if throttle.token_guessing(request):
                    response = error(
                        429, "too many wrong tokens from this address: wait 15 minutes"
                    )
                    response["Retry-After"] = str(throttle.TOKEN_WINDOW_S)
                    return response
                scheme, _, token = header.partition(" ")
                user, refused = (
                    tokens.check_token(token.strip())
                    if scheme.lower() == "bearer"
                    else (None, "use Authorization: Bearer <token>")
                )
                if user is None:
                    throttle.token_failed(request)
                    return error(401, refused)
                request.user = user
            elif not request.user.is_authenticated:
                return error(401, "sign in or send Authorization: Bearer <token>")
            elif request.method not in SAFE_METHODS and _reject_csrf(request) is not None:
                return error(
                    403, "CSRF check failed: send the X-CSRFToken header with session requests"
                )
            if not request.user.is_active:
                return error(401, "this account is disabled")
            try:
                return view(request, *args, **kwargs)
            except errors.TutorError as exc:
                return errors.json_response(exc)

        return wrapper

    return decorate


MAX_ID = 2**63 - 1  # the database's largest id: a larger one in a URL is a 404, not an overflow
MAX_JSON_DEPTH = 20  # nesting a request body may have (the API's bodies have 1 level)


class BodyTooLarge(errors.TutorError):
    """The request body is over the limit (a question is at most MAX_QUESTION_CHARS characters)."""

    status = 413


def _json_body(request: HttpRequest) -> dict | None:
    """The request's JSON object, or None (not UTF-8, not JSON, too deep, not an object); BodyTooLarge
    for a body over DATA_UPLOAD_MAX_MEMORY_SIZE."""
    try:
        raw = request.body
    except RequestDataTooBig:
        raise BodyTooLarge(
            f"the request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024} KB; "
            f"a question is at most {MAX_QUESTION_CHARS} characters"
        ) from None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _depth(decoded) > MAX_JSON_DEPTH:
        return None
    try:
        body = json.loads(decoded)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _depth(text: str) -> int:
    """An upper bound of the JSON text's nesting (brackets inside strings count too), found without
    parsing it, so that 10,000 nested arrays never reach the recursive parser."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _is_text(value: str) -> bool:
    """False for a string with a lone surrogate ("\ud800" in JSON): not Unicode text, not storable."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _question_data(question: Question, user) -> dict:
    """The API's view of a question for `user`, as its page shows it: a banked answer shown step by
    step (`steps.applies`) is not handed out whole until the student asked for the whole solution
    (the page's button, or `?reveal=solution`): until then `answer` keeps only which answer it is and
    how it was checked (its text, final answer and reasoning are null, `withheld` is true) and `steps`
    holds the steps shown so far and how many there are. And the asker's follow-up questions on its
    problem."""
    data = question.to_dict()
    served_id = data["answer"]["solution_id"] if "answer" in data else None
    served = None
    if served_id is not None:  # the answer to_dict served: the question's own, mostly (no query)
        served = (
            question.solution
            if question.solution_id == served_id
            else Solution.objects.filter(pk=served_id).first()
        )
    if served is not None and steps.applies(user=user, question=question, served=served):
        state = steps.state_of(student=user, question=question, served=served)
        data["steps"] = state.to_dict()
        if not state.whole:
            data["answer"].update(text=None, final=None, reasoning=None, withheld=True)
            data["reveal"] = f"/api/questions/{question.pk}?reveal=solution"
    if question.problem_id and question.outcome != Question.Outcome.GENERATING:
        follow_ups = [
            f.to_dict()
            for f in FollowUp.objects.filter(
                user_id=question.user_id, question__problem_id=question.problem_id
            )
        ]
        if follow_ups:
            data["follow_ups"] = follow_ups
    return data


def _question_response(question: Question, user, status: int = 200) -> JsonResponse:
    response = JsonResponse(
        _question_data(question, user), status=status, json_dumps_params={"ensure_ascii": False}
    )
    retry_after = getattr(question, "retry_after", None)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def _asked(run: Callable[[], Question], user) -> HttpResponse:
    """Run an ask (a new question, a chosen suggestion, a retry) and answer with its status: 200
    served, 202 generating, 429 busy, 503 no model (BadQuestion's 400 and OneAtATime's 429 come from
    errors)."""
    question = run()
    if question.outcome == Question.Outcome.REFUSED:
        return _question_response(question, user, 429 if question.refusal == "busy" else 503)
    return _question_response(
        question, user, 202 if question.outcome == Question.Outcome.GENERATING else 200
    )


@api_endpoint("POST")
def ask(request: HttpRequest) -> HttpResponse:
    text = _question_text(_json_body(request))
    if isinstance(text, HttpResponse):
        return text
    permissions.require_asker_role(request.user)
    return _asked(lambda: asking.answer_question(user=request.user, text=text), request.user)


@api_endpoint("GET")
def question_detail(request: HttpRequest, question_id: int) -> HttpResponse:
    """A question as its page shows it: a banked answer taken step by step gives the steps shown so
    far; `?reveal=solution` opens the whole solution, recorded as the page's "Whole solution" is."""
    reveal = request.GET.get("reveal")
    if reveal is not None and reveal != "solution":
        return error(400, '"reveal" can only be "solution"')
    question = permissions.question_for(request.user, question_id)
    # A client polling instead of streaming counts as watching; a generation that stopped is settled.
    question = live.watch(question=question)
    if reveal == "solution":
        served = question.served_solution()
        if served is not None and steps.applies(
            user=request.user, question=question, served=served
        ):
            steps.reveal(student=request.user, question=question, action="whole")
    return _question_response(question, request.user)


@api_endpoint("GET")
def question_stream(request: HttpRequest, question_id: int) -> HttpResponse:
    """Server-sent events: {"type": "reasoning"|"answer", "text"} as generated, each with its `id:`
    (the event's number), then {"type": "done", ...}. Any web process serves any stream; a client
    that reconnects (Last-Event-ID, or ?after=N) gets the events after the last one it had."""
    after = request.GET.get("after")
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 9):
        return error(400, '"after" must be a whole number from 0 to 999999999')
    question = permissions.question_for(request.user, question_id)
    after = _last_event_id(request)
    slot = open_streams.take(request.user.pk)  # raises TooManyStreams (429)
    # Under ASGI (the README's server) the stream is an async generator: it waits on the event loop
    # and holds no thread. Under WSGI (runserver, tests) Django would buffer an async one whole, so the
    # same stream runs as a plain generator on the request's thread.
    return _stream_response(
        request, question, after, slot, functools.partial(_done, question, request.user)
    )


def _stream_response(
    request: HttpRequest,
    followed: Question | FollowUp,
    after: int,
    slot: _StreamSlot,
    done: Callable[[], str],
) -> StreamingHttpResponse:
    events = (
        _aevents(followed, after=after, slot=slot, done=done)
        if isinstance(request, ASGIRequest)
        else _events(followed, after=after, slot=slot, done=done)
    )
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


RECONNECT_MS = 1000  # the SSE `retry:` a browser waits before it reconnects by itself


def _last_event_id(request: HttpRequest) -> int:
    """Where a reconnecting client left off: the Last-Event-ID header (EventSource sends it itself)
    or ?after=N (a new EventSource cannot set headers), whichever is later; 0 for junk."""
    last = 0
    for raw in (request.headers.get("Last-Event-ID", ""), request.GET.get("after", "")):
        raw = raw.strip()
        if raw.isascii() and raw.isdigit() and len(raw) <= 9:
            last = max(last, int(raw))
    return last


class TooManyStreams(errors.TutorError):
    """This account has SUANJING_STREAMS_PER_USER streams open in this process already."""

    status = 429
    retry_after = 5


class OpenStreams:
    """Streams open per account in this process: a cap, so that one account (a script, a flood of tabs)
    cannot hold the process's connections. Per process on purpose: a count shared through the database
    would outlive a killed process; each web process caps its own, which bounds an account at
    SUANJING_STREAMS_PER_USER x processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}

    def take(self, user_id: int) -> _StreamSlot:
        with self._lock:
            if self._open.get(user_id, 0) >= settings.SUANJING_STREAMS_PER_USER:
                raise TooManyStreams(
                    "Too many answers open at once: close another tab first. "
                    "同时打开的回答太多了，请先关闭其他页面。"
                )
            self._open[user_id] = self._open.get(user_id, 0) + 1
        return _StreamSlot(self, user_id)

    def give_back(self, user_id: int) -> None:
        with self._lock:
            left = self._open.get(user_id, 0) - 1
            if left > 0:
                self._open[user_id] = left
            else:
                self._open.pop(user_id, None)

    def count(self, user_id: int) -> int:
        with self._lock:
            return self._open.get(user_id, 0)


class _StreamSlot:
    """One open stream's place in `OpenStreams`, given back once (the stream ended, the client left,
    or the response was never iterated)."""

    def __init__(self, streams: OpenStreams, user_id: int) -> None:
        self._streams, self._user_id, self._held = streams, user_id, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._streams.give_back(self._user_id)

    def __del__(self) -> None:  # a response Django dropped before iterating it
        self.release()


open_streams = OpenStreams()


def _sse(item: tuple[int, dict] | None) -> str:
    if item is None:
        return ": keep-alive\n\n"
    seq, event = item
    return f"id: {seq}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


def _done(question: Question, user) -> str:
    """The last event. A question left generating (its generation ended without it) is settled here."""
    live.watch(question=Question.objects.get(pk=question.pk))
    question = Question.objects.select_related("problem", "solution").get(pk=question.pk)
    data = {**_question_data(question, user), "type": "done"}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _follow_up_done(follow_up: FollowUp) -> str:
    """A follow-up stream's last event (a follow-up left generating is settled here)."""
    follow_up = live.watch(question=FollowUp.objects.get(pk=follow_up.pk))
    return f"data: {json.dumps({**follow_up.to_dict(), 'type': 'done'}, ensure_ascii=False)}\n\n"


def _events(
    followed: Question | FollowUp, *, after: int, slot: _StreamSlot, done: Callable[[], str]
) -> Iterator[str]:
    try:
        yield f"retry: {RECONNECT_MS}\n: stream\n\n"
        deadline = time.monotonic() + settings.SUANJING_STREAM_MAX_S
        for item in live.follow(question=followed, after=after):
            yield _sse(item)
            if time.monotonic() > deadline:
                return  # the client reconnects (retry:) with Last-Event-ID and goes on
        yield done()
    finally:
        slot.release()


async def _aevents(
    followed: Question | FollowUp, *, after: int, slot: _StreamSlot, done: Callable[[], str]
) -> AsyncIterator[str]:
    from asgiref.sync import sync_to_async

    try:
        yield f"retry: {RECONNECT_MS}\n: stream\n\n"
        deadline = time.monotonic() + settings.SUANJING_STREAM_MAX_S
        async for item in live.afollow(question=followed, after=after):
            yield _sse(item)
            if time.monotonic() > deadline:
                return
        yield await sync_to_async(done, thread_sensitive=False)()
    finally:
        slot.release()


@api_endpoint("POST")
def question_feedback(request: HttpRequest, question_id: int) -> HttpResponse:
    question = permissions.question_for(request.user, question_id, action="feedback")
    asking.record_feedback(question=question)
    return _question_response(question, request.user)


@api_endpoint("POST")
def question_choose(request: HttpRequest, question_id: int) -> HttpResponse:
    """The answer to "Is this your question?": {"problem_id": N} (yes) or {"problem_id": null} (no: ask
    the tutor, a live generation)."""
    question = permissions.question_for(request.user, question_id, action="choose")
    body = _json_body(request)
    if body is None or "problem_id" not in body:
        return error(400, 'send {"problem_id": N} or {"problem_id": null}')
    choice = body["problem_id"]
    if isinstance(choice, float) and choice.is_integer():
        choice = int(choice)  # JSON Schema's integer: 7.0 and 7e16 are integers too
    if choice is not None and (isinstance(choice, bool) or not isinstance(choice, int)):
        return error(400, '"problem_id" must be a suggested problem\'s id or null')
    if choice is not None and not 1 <= choice <= MAX_ID:
        return error(400, "that problem was not offered")
    if question.outcome != Question.Outcome.SUGGESTED:
        raise errors.Conflict("this question is not waiting for a choice")
    problem = None
    if choice is not None:
        problem = Problem.objects.filter(pk=choice).first()
        if problem is None:
            return error(400, "that problem was not offered")
    return _asked(
        lambda: asking.choose_suggestion(question=question, problem=problem), request.user
    )


@api_endpoint("POST")
def question_stop(request: HttpRequest, question_id: int) -> HttpResponse:
    """Stop waiting for a live answer (the generation stops when nobody else waits for it)."""
    question = permissions.question_for(request.user, question_id, action="stop")
    live.live_jobs.stop(question=question)
    question.refresh_from_db()
    return _question_response(question, request.user)


@api_endpoint("POST")
def question_retry(request: HttpRequest, question_id: int) -> HttpResponse:
    """ "Try again" on a failed live answer, "another answer" on a finished one: a new live generation
    with a new seed (202). 409 for a question that is not a live answer."""
    question = permissions.question_for(request.user, question_id, action="retry")
    if question.outcome not in asking.RETRY_OUTCOMES:
        raise errors.Conflict("only a live answer that failed or finished can be written again")
    return _asked(lambda: asking.retry_question(question=question), request.user)


# -- follow-up questions on an answer ---------------------------------------------------------------


def _question_text(body: dict | None) -> str | HttpResponse:
    """The "question" of a JSON body, checked as POST /api/ask checks it, or the 400 to send."""
    if body is None:
        return error(400, 'send a JSON object: {"question": "..."}')
    text = body.get("question")
    if not isinstance(text, str):
        return error(400, '"question" must be a string')
    if not _is_text(text):
        return error(400, '"question" is not valid Unicode text (a lone surrogate such as \\ud800)')
    if len(text) > MAX_QUESTION_CHARS:
        return error(400, f'"question" is over {MAX_QUESTION_CHARS} characters')
    return text


def _follow_up_response(follow_up: FollowUp, status: int = 200) -> JsonResponse:
    return JsonResponse(
        follow_up.to_dict(), status=status, json_dumps_params={"ensure_ascii": False}
    )


@api_endpoint("POST")
def question_followup(request: HttpRequest, question_id: int) -> HttpResponse:
    """Ask about this answer (the asker): {"question": "why is step 2 true?"} -> 202, a live generation
    with the problem and the answer as the student has seen it in the prompt; follow its `stream`."""
    question = permissions.question_for(request.user, question_id, action="followup")
    text = _question_text(_json_body(request))
    if isinstance(text, HttpResponse):
        return text
    follow_up = asking.ask_follow_up(user=request.user, question=question, text=text)
    return _follow_up_response(follow_up, 202)


@api_endpoint("GET")
def followup_detail(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    follow_up = permissions.follow_up_for(request.user, follow_up_id)
    return _follow_up_response(live.watch(question=follow_up))


@api_endpoint("GET")
def followup_stream(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    """Server-sent events of a follow-up's reply, as /api/questions/<id>/stream sends a question's."""
    after = request.GET.get("after")
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 9):
        return error(400, '"after" must be a whole number from 0 to 999999999')
    follow_up = permissions.follow_up_for(request.user, follow_up_id)
    after = _last_event_id(request)
    slot = open_streams.take(request.user.pk)  # raises TooManyStreams (429)
    return _stream_response(
        request, follow_up, after, slot, functools.partial(_follow_up_done, follow_up)
    )


@api_endpoint("POST")
def followup_stop(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    follow_up = permissions.follow_up_for(request.user, follow_up_id, action="stop")
    live.live_jobs.stop(question=follow_up)
    follow_up.refresh_from_db()
    return _follow_up_response(follow_up)


@api_endpoint("POST")
def followup_retry(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    """ "Try again" on a failed follow-up (in its place), "another answer" on an answered one (a new
    follow-up with the same words): 202 with the follow-up being written; 409 while it is written."""
    follow_up = permissions.follow_up_for(request.user, follow_up_id, action="retry")
    if follow_up.outcome == FollowUp.Outcome.GENERATING:
        raise errors.Conflict("this follow-up is being answered now")
    return _follow_up_response(asking.retry_follow_up(follow_up=follow_up), 202)


def _steps_response(state: steps.StepState, **extra) -> JsonResponse:
    return JsonResponse({**state.to_dict(), **extra}, json_dumps_params={"ensure_ascii": False})


@api_endpoint("GET", "POST")
def question_steps(request: HttpRequest, question_id: int) -> HttpResponse:
    """Step by step on a banked answer (the asker): GET where they are, POST {"action": "hint" |
    "next" | "whole"} to reveal more. 409 when the question has no banked answer."""
    question = permissions.question_for(request.user, question_id, action="steps")
    if request.method == "GET":
        served = question.served_solution()
        if served is None or question.outcome != Question.Outcome.HIT:
            raise errors.Conflict("this question has no banked answer to show step by step")
        return _steps_response(
            steps.state_of(student=request.user, question=question, served=served)
        )
    body = _json_body(request)
    action = body.get("action") if body is not None else None
    if action not in steps.ACTIONS:
        return error(400, 'send {"action": "hint"}, {"action": "next"} or {"action": "whole"}')
    return _steps_response(steps.reveal(student=request.user, question=question, action=action))


@api_endpoint("POST")
def question_check(request: HttpRequest, question_id: int) -> HttpResponse:
    """Check my answer (the asker): {"answer": "..."} -> {"right": true|false, ...where they are}; the
    solution is not in the response."""
    question = permissions.question_for(request.user, question_id, action="check")
    body = _json_body(request)
    answer = body.get("answer") if body is not None else None
    if not isinstance(answer, str) or not _is_text(answer):
        return error(400, 'send {"answer": "your final answer"}')
    if not re.search(openapi.QUESTION_PATTERN, answer):
        return error(400, '"answer" is empty or has control characters')
    if len(answer) > steps.MAX_CHECK_CHARS:
        return error(400, f'"answer" is over {steps.MAX_CHECK_CHARS} characters')
    state = steps.check_answer(student=request.user, question=question, answer=answer)
    return _steps_response(state, right=bool(state.last_right))


@api_endpoint("GET")
def problems(request: HttpRequest) -> HttpResponse:
    permissions.require_teacher(request.user)
    form = BankFilterForm(request.GET)
    if not form.is_valid():
        return error(400, "bad filter", detail=form.errors.get_json_data())
    paginator = Paginator(form.filter(Problem.objects.all()).order_by("id"), 50)
    page_number = form.cleaned_data.get("page") or 1
    if page_number > max(paginator.num_pages, 1):
        return error(404, f"there are {paginator.num_pages} pages")
    page = paginator.page(page_number)
    best = Solution.objects.best_status_by_problem([p.pk for p in page.object_list])
    items = [
        {
            "id": p.pk,
            "text": p.text,
            "lang": p.lang,
            "topic": p.topic,
            "difficulty": p.difficulty,
            "reference_answer": p.reference_answer,
            "best_status": best.get(p.pk),
        }
        for p in page.object_list
    ]
    return JsonResponse(
        {
            "items": items,
            "total": paginator.count,
            "page": page_number,
            "pages": paginator.num_pages,
        },
        json_dumps_params={"ensure_ascii": False},
    )


def schema(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi.SCHEMA, json_dumps_params={"ensure_ascii": False, "indent": 1})
