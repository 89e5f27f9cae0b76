"""Live generation: a student's question answered by the model while they watch, and worked solutions
towards a problem's answer key.

Owns: the live generations' shared state (`LiveGeneration` rows, their `LiveEvent` stream, the
questions and follow-ups linked to them by `Question.live` and `FollowUp.live`); starting or joining one
(`LiveJobs.start_or_join`; a follow-up's, never shared, `LiveJobs.start_follow_up`), running
it in this process under a lease, following it from any process (`follow`), taking it over when its
owner died (`LiveJobs.take_over`), Stop and orphans, `_StreamSplitter` (reasoning and answer events as
text streams in), `store_live_result` (parse, check, store with provenance, settle the waiting
questions), `store_follow_up_result` (a follow-up's reply, kept on the follow-up: never a problem, an
answer or a cache entry), and the guided solutions (`queue_guided_solution`, `work_on_guided`, `store_guided_result`).
Does not own: deciding that a question needs a live answer (`asking`), the engine (`runtime`), the SSE
framing (`tutor.views.api`).

How several web processes share one generation (every rule holds on SQLite and PostgreSQL):
- Single-flight: starting inserts a LiveGeneration; the partial unique constraint (one *running* row per
  key "problem:N" / "text:<question key>") turns a second start anywhere into an IntegrityError, and the
  loser joins the running one. The slot limit (SUANJING_MAX_LIVE_JOBS) and one live answer per student
  are counted in the same transaction as the insert, which SQLite's single write lock (the INSERT comes
  first) or a PostgreSQL advisory lock serialises.
- The process that inserted the row runs it in a thread and holds a lease (`owner`, `lease_until`,
  LEASE_S): every FLUSH_S it appends what streamed as a few LiveEvent rows and the raw text so far
  (`generated`) in one short transaction that is also the lease renewal (at least every RENEW_S), guarded
  by `owner = me`: a process that lost its lease writes nothing more and cancels its engine request.
- Any process streams it: `follow` reads the rows after the last seq it sent (`afollow` on an event
  loop under ASGI: one short round of reads in a pool thread, then an await, so a waiting stream holds
  no thread).
- Takeover: a lease that ran out (the owner was killed) is taken by whoever notices first — a follower,
  a poll, any ask — with one `UPDATE ... WHERE lease_until < now`, so exactly one process wins. It
  continues the raw completion from `prompt + generated` (same seed, what is left of the token budget)
  and appends after the last seq, so a student's stream goes on with no gap and no repeat. Without an
  engine the waiting questions fail with a retry offered.
- Nothing is left generating: a question whose generation is not running any more is settled (failed,
  with a retry) by whoever reads it (`watch`).
- Stop marks the question failed and, when nobody else waits, sets `cancel_requested`; the owner reads
  it at every flush. Followers mark `watched_at` (at most every WATCH_EVERY_S); a generation nobody
  watched for SUANJING_LIVE_ORPHAN_S (at least ORPHAN_FLOOR_S, so that a follower between two marks is
  not mistaken for nobody) is cancelled by its owner.

Wake-ups: a follower in the owner's process is woken at once (a condition variable). Across processes,
with REDIS_URL set the owner publishes on `suanjing:live:<id>` after each flush and every process has one
subscriber thread, so followers wake within milliseconds and otherwise only look at the database once a
second; without Redis (the default: a school PC runs no Redis) followers poll the generation's row every
POLL_S, one indexed read of a few bytes. PostgreSQL's LISTEN/NOTIFY is not used: it needs a connection
per listening process outside Django's pooling, and SQLite has no equivalent, so polling stays the
common path and Redis the optional fast one. The events themselves always come from the database, so a
lost or late notification delays a piece by at most POLL_S / NOTIFIED_POLL_S, never loses one.

`LiveJobs` holds only what is by nature this process's: the threads running the generations it owns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from tutor.errors import RETRY_AFTER_S, EngineUnavailable, OneAtATime
from tutor.models import FollowUp, LiveEvent, LiveGeneration, Problem, Question, Solution
from tutor.services import bankcache, runtime
from tutor.services.text import guess_lang, question_key

log = logging.getLogger(__name__)

GUIDED_EVERY_H = 1  # a worked solution towards a problem's answer key is queued at most this often

LEASE_S = 6.0  # an owner that has not renewed for this long is taken to be dead
RENEW_S = 2.0  # the owner renews at least this often, even while nothing streams (a long prefill)
FLUSH_S = 0.15  # the owner writes what streamed this often: a few rows, not one per token
POLL_S = 0.15  # a follower without Redis looks for new events this often
NOTIFIED_POLL_S = (
    1.0  # ... and with Redis (woken at once by a notification; this is the safety net)
)
WATCH_EVERY_S = 2.0  # a follower marks `watched_at` at most this often
ORPHAN_FLOOR_S = 2.5 * WATCH_EVERY_S  # never call a generation orphaned sooner than this
STOP_CHECK_S = 0.5  # a follower sees its own question stopped within this
KEEPALIVE_S = 15.0  # an SSE comment this often while nothing streams (proxies keep the connection)
REDIS_CHANNEL = "suanjing:live:"

STOPPED = "You stopped this answer. 你停止了这个回答。"
LOOPED = "The model kept repeating itself and was stopped. 模型一直在重复，已被停止。"
REJECTED = "The model gave an answer a teacher has rejected. 模型给出的答案已被老师否定。"
NO_FINAL = "The model did not reach a final answer. 模型没有得出最终答案。"
STRANDED = "The answer stopped being written. Try again. 回答中断了，请再试一次。"
ENGINE_GONE = (
    "The model stopped while writing this answer and is not available now. Try again in a moment. "
    "模型中断了，请稍后再试。"
)
RUNNING = LiveGeneration.Status.RUNNING
GENERATING = Question.Outcome.GENERATING


def orphan_after_s() -> float:
    return max(float(settings.SUANJING_LIVE_ORPHAN_S), ORPHAN_FLOOR_S)


def _owner_token() -> str:
    """Who runs a generation: host, pid and a nonce (a fresh one per run: a stalled thread of this
    process that lost its lease must not mistake a taker in the same process for itself)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def _lease_from(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=LEASE_S)


class _StreamSplitter:
    """Splits streamed model text into reasoning and answer events at `</think>` as it arrives.

    Display only: what is stored comes from `solver.answers.parse_output` on the whole text."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, *, implicit_think: bool):
        self.buf = ""
        self.mode = "start"  # until we know whether the text opens with its own "<think>"
        self.implicit_think = implicit_think

    def feed(self, piece: str) -> list[dict[str, str]]:
        self.buf += piece
        out: list[dict[str, str]] = []
        while True:
            if self.mode == "start":
                head = self.buf.lstrip()
                if head.startswith(self.OPEN):
                    self.buf, self.mode = head[len(self.OPEN) :], "reasoning"
                    continue
                if self.OPEN.startswith(head):
                    return out  # could still become "<think>"
                self.mode = "reasoning" if self.implicit_think else "answer"
                continue
            if self.mode == "reasoning":
                end = self.buf.find(self.CLOSE)
                if end >= 0:
                    self._emit(out, "reasoning", self.buf[:end])
                    self.buf, self.mode = self.buf[end + len(self.CLOSE) :], "answer"
                    continue
                keep = next(
                    (
                        n
                        for n in range(min(len(self.CLOSE) - 1, len(self.buf)), 0, -1)
                        if self.CLOSE.startswith(self.buf[-n:])
                    ),
                    0,
                )
                self._emit(out, "reasoning", self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
                return out
            self._emit(out, "answer", self.buf)
            self.buf = ""
            return out

    def flush(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        self._emit(out, "reasoning" if self.mode == "reasoning" else "answer", self.buf)
        self.buf = ""
        return out

    @staticmethod
    def _emit(out: list[dict[str, str]], kind: str, text: str) -> None:
        if text:
            out.append({"type": kind, "text": text})


# -- wake-ups ----------------------------------------------------------------------------------------


class _Wakeups:
    """Wakes the followers of a generation when it has news: in this process at once, in the others
    through Redis pub/sub when REDIS_URL is set. Only a hint: followers always read the database."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[int, int] = {}
        self._pid = 0
        self._client: Any = None
        self._down_until = 0.0  # Redis failed: do not try again before this (monotonic)
        self._listener: threading.Thread | None = None
        self.listening = False  # the subscriber thread is connected: notifications will come
        # Streams served on an event loop (ASGI) wait on an asyncio.Event, set from whichever thread
        # bumps the version: gen_id -> {(loop, event)}.
        self._async_waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def version(self, gen_id: int) -> int:
        with self._cond:
            return self._versions.get(gen_id, 0)

    def bump(self, gen_id: int) -> None:
        with self._cond:
            if len(self._versions) > 10_000:
                self._versions.clear()  # waiters compare for inequality: a reset only wakes them
            self._versions[gen_id] = self._versions.get(gen_id, 0) + 1
            self._cond.notify_all()
            waiters = list(self._async_waiters.get(gen_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: its stream is gone
                pass

    def notify(self, gen_id: int) -> None:
        """Wake every follower of `gen_id` (call after the transaction with the news committed)."""
        self.bump(gen_id)
        client = self._redis()
        if client is None:
            return
        try:
            client.publish(f"{REDIS_CHANNEL}{gen_id}", "1")
        except Exception:  # Redis down: followers elsewhere fall back to polling
            self._down("publish")

    def wait(self, gen_id: int, seen: int) -> None:
        """Until `gen_id` has news after version `seen`, or the poll interval passes."""
        self._listen()
        timeout = NOTIFIED_POLL_S if self.listening else POLL_S
        with self._cond:
            self._cond.wait_for(lambda: self._versions.get(gen_id, 0) != seen, timeout)

    async def await_news(self, gen_id: int, seen: int) -> None:
        """`wait` for a stream served on an event loop: no thread is held while it waits."""
        self._listen()
        timeout = NOTIFIED_POLL_S if self.listening else POLL_S
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            if self._versions.get(gen_id, 0) != seen:
                return
            self._async_waiters.setdefault(gen_id, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                left = self._async_waiters.get(gen_id)
                if left is not None:
                    left.discard(waiter)
                    if not left:
                        del self._async_waiters[gen_id]

    # -- Redis -------------------------------------------------------------------------------------

    def _redis(self) -> Any:
        url = getattr(settings, "REDIS_URL", "")
        if not url or time.monotonic() < self._down_until:
            return None
        if self._pid != os.getpid():  # a forked worker must not share its parent's sockets
            self._pid, self._client, self._listener, self.listening = os.getpid(), None, None, False
        if self._client is None:
            try:
                import redis
            except ImportError:
                log.error("REDIS_URL is set but the redis package is missing; polling instead")
                self._down_until = float("inf")
                return None
            self._client = redis.Redis.from_url(
                url, socket_connect_timeout=0.5, socket_timeout=2.0, health_check_interval=30
            )
        return self._client

    def _down(self, what: str) -> None:
        log.warning("Redis %s failed; live followers poll for 10 s", what, exc_info=True)
        self._down_until = time.monotonic() + 10.0
        self.listening = False

    def _listen(self) -> None:
        if self._redis() is None or (self._listener is not None and self._listener.is_alive()):
            return
        with self._cond:
            if self._listener is not None and self._listener.is_alive():
                return
            self._listener = threading.Thread(
                target=self._subscribe, name="live-redis", daemon=True
            )
            self._listener.start()

    def _subscribe(self) -> None:
        while True:
            client = self._redis()
            if client is None:
                time.sleep(1.0)
                continue
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{REDIS_CHANNEL}*")
                self.listening = True
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "pmessage":
                        tail = message["channel"].rsplit(b":", 1)[-1]
                        if tail.isdigit():
                            self.bump(int(tail))
            except Exception:
                self._down("subscribe")
                time.sleep(1.0)


wakeups = _Wakeups()


# -- the generations this process runs ------------------------------------------------------------


@dataclass
class _Control:
    """What the owner reads back at each flush."""

    cancel_requested: bool
    watched_at: dt.datetime | None


class _Run:
    """One generation this process runs, under its lease `owner`."""

    def __init__(self, *, gen_id: int, owner: str, engine: Any, manifest: Any) -> None:
        self.gen_id = gen_id
        self.owner = owner
        self.engine = engine
        self.manifest = manifest
        self.handle: Any = None
        self.cancelled = False
        self.done = threading.Event()

    def cancel(self) -> None:
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()


class _Writer:
    """The owner's side of the database: appends events and text in short transactions that renew the
    lease; keeps what a failed write could not store for the next one."""

    def __init__(self, run: _Run, gen: LiveGeneration) -> None:
        self.run = run
        self.seq = gen.events
        self.generated = gen.generated
        self.tokens = gen.tokens
        self.text = ""  # not written yet
        self.events: list[dict[str, str]] = []
        self.pieces = 0
        self.renewed = time.monotonic()
        self.control = _Control(gen.cancel_requested, gen.watched_at)

    @property
    def unwritten(self) -> bool:
        return bool(self.text or self.events or self.pieces)

    def step(
        self, text: str, events: list[dict[str, str]], pieces: int, *, final: bool
    ) -> _Control | None:
        """Write (or, with nothing to write and no renewal due, read) the shared state. None: this
        process lost the lease."""
        self.text += text
        self.events.extend(events)
        self.pieces += pieces
        due = bool(self.text or self.events) or final
        try:
            if due or time.monotonic() - self.renewed >= RENEW_S:
                return self._write()
            return self._read()
        except DatabaseError:  # e.g. SQLite busy beyond its timeout: keep the text, try again
            log.warning("live generation %s: the write failed", self.run.gen_id, exc_info=True)
            return self.control

    def _write(self) -> _Control | None:
        merged = _merge(self.events)
        now = timezone.now()
        with runtime.one_writer(), transaction.atomic():
            owned = LiveGeneration.objects.filter(
                pk=self.run.gen_id, owner=self.run.owner, status=RUNNING
            ).update(
                lease_until=_lease_from(now),
                events=self.seq + len(merged),
                generated=self.generated + self.text,
                tokens=self.tokens + self.pieces,
            )
            if not owned:
                return None
            LiveEvent.objects.bulk_create(
                LiveEvent(
                    generation_id=self.run.gen_id, seq=self.seq + i, kind=e["type"], text=e["text"]
                )
                for i, e in enumerate(merged, start=1)
            )
            row = (
                LiveGeneration.objects.filter(pk=self.run.gen_id)
                .values("cancel_requested", "watched_at")
                .get()
            )
        self.seq += len(merged)
        self.generated += self.text
        self.tokens += self.pieces
        self.text, self.events, self.pieces = "", [], 0
        self.renewed = time.monotonic()
        self.control = _Control(**row)
        if merged:
            wakeups.notify(self.run.gen_id)
        return self.control

    def _read(self) -> _Control | None:
        row = (
            LiveGeneration.objects.filter(pk=self.run.gen_id)
            .values("owner", "status", "cancel_requested", "watched_at")
            .first()
        )
        if row is None or row["owner"] != self.run.owner or row["status"] != RUNNING:
            return None
        self.control = _Control(row["cancel_requested"], row["watched_at"])
        return self.control


def _merge(events: list[dict[str, str]]) -> list[dict[str, str]]:
    """Neighbouring events of one kind as one: a flush writes a few rows, not one per token."""
    out: list[dict[str, str]] = []
    for event in events:
        if out and out[-1]["type"] == event["type"]:
            out[-1] = {"type": event["type"], "text": out[-1]["text"] + event["text"]}
        else:
            out.append(dict(event))
    return out


class _NoSlot(Exception):
    """Every live generation slot is taken (rolls the insert back)."""


def _queue_starts() -> None:
    """Starts of new generations take turns to the end of their transaction, so that two processes
    counting slots (or a student's running answers) cannot both take the last one. PostgreSQL: an
    advisory lock. SQLite: nothing to do, the INSERT that comes first holds its one write lock."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x53_4A_4C_56])


class LiveJobs:
    """Starting, joining, stopping and taking over live generations; the threads of the ones this
    process runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}

    def running(self) -> int:
        """Live generations running now, in every process."""
        return LiveGeneration.objects.filter(status=RUNNING).count()

    def start_or_join(
        self,
        *,
        user,
        text: str,
        match: dict,
        started: float,
        question: Question | None = None,
        seed: int | None = None,
        rejected: str | None = None,
    ) -> Question:
        """Start a generation for this question (or join the one running for the same text or problem,
        in any process). `question`: an existing question (a suggestion declined, a retry) to update
        instead of a new one. `rejected`: the final answer a teacher rejected ("" when it had none): the
        prompt says so. Raises OneAtATime when this user already waits for another generation (nothing
        is stored). The generation starts when the caller's transaction commits."""
        problem = match["problem"]
        key = f"problem:{problem.pk}" if problem is not None else f"text:{question_key(text)}"
        common = {"text": text, "key": question_key(text), **match}

        def settle(**fields) -> Question:
            nonlocal question
            if question is None:
                question = Question.objects.create(user=user, **common, **fields)
                return question
            fields = {**common, **fields}
            for name, value in fields.items():
                setattr(question, name, value)
            question.save(update_fields=list(fields))
            return question

        def refuse(refusal: str, error: str) -> Question:
            refused = settle(
                outcome=Question.Outcome.REFUSED, refusal=refusal, error=error, live=None
            )
            if refusal == "busy":
                refused.retry_after = RETRY_AFTER_S
            return refused

        busy = f"Busy: every live generation slot is taken. Try again in {RETRY_AFTER_S} s."
        self.reap()
        for _ in range(3):  # a generation that ends (or starts) meanwhile sends us round again
            self._check_one_at_a_time(user=user, key=key)
            running = LiveGeneration.objects.filter(key=key, status=RUNNING).first()
            if running is not None and running.cancel_requested:
                # Everyone pressed Stop and its owner is ending it: end it now, so that this ask (a
                # "Try again" right after Stop) starts afresh instead of joining a cancelled run.
                self._end_stopped(running.pk)
                continue
            if running is not None:
                joined = self._join(running, settle)
                if joined is not None:
                    return joined
                continue
            if (
                LiveGeneration.objects.filter(status=RUNNING).count()
                >= settings.SUANJING_MAX_LIVE_JOBS
            ):
                return refuse("busy", busy)
            try:
                engine, manifest = runtime.get_engine()
            except EngineUnavailable as exc:
                log.error("live generation unavailable", exc_info=True)
                return refuse("no_model", str(exc)[:300])
            prompt = _render_prompt(manifest, text, rejected)
            owner = _owner_token()
            now = timezone.now()
            try:
                with transaction.atomic():
                    _queue_starts()
                    gen = LiveGeneration.objects.create(
                        key=key,
                        text=text,
                        problem=problem,
                        asker=user,
                        seed=seed,
                        rejected=rejected,
                        prompt=prompt,
                        owner=owner,
                        lease_until=_lease_from(now),
                        watched_at=now,
                    )
                    others = LiveGeneration.objects.filter(status=RUNNING).exclude(pk=gen.pk)
                    if others.count() >= settings.SUANJING_MAX_LIVE_JOBS:
                        raise _NoSlot
                    self._check_one_at_a_time(user=user, key=key)
                    settle(outcome=GENERATING, refusal="", error="", live=gen)
            except IntegrityError:
                continue  # another process started this key a moment ago: join it
            except _NoSlot:
                return refuse("busy", busy)
            transaction.on_commit(functools.partial(self._launch, gen.pk, owner, engine, manifest))
            return question
        return refuse("busy", busy)

    @staticmethod
    def _check_one_at_a_time(*, user, key: str) -> None:
        # A question being answered and a follow-up being answered count alike.
        mine = (
            LiveGeneration.objects.filter(status=RUNNING)
            .filter(
                Q(questions__user=user, questions__outcome=GENERATING)
                | Q(follow_ups__user=user, follow_ups__outcome=GENERATING)
            )
            .exclude(key=key)
            .values("pk")
            .distinct()
            .count()
        )
        if mine >= settings.SUANJING_LIVE_PER_STUDENT:
            raise OneAtATime(
                "You already have a question being answered. Wait for it or stop it, then ask "
                "again. 你已有一个问题正在解答，请等待或停止后再问。"
            )

    def start_follow_up(
        self,
        *,
        follow_up: FollowUp,
        problem: str,
        shown: str,
        partial: bool,
        seed: int | None = None,
    ) -> str | None:
        """Start the live generation that answers `follow_up` (saved by the caller, whose transaction
        this joins): `problem` and `shown` (the answer as the student saw it; `partial`: its first steps
        only) go into the prompt. Never shared: its key is the follow-up's own. Returns None when it
        started (when the caller's transaction commits), else the refusal, "busy" (every slot taken) or
        "no_model", with the reason in `follow_up.error`; raises OneAtATime when this student already
        waits for another live answer."""
        key = f"{FOLLOW_UP_KEY}{follow_up.pk}"
        user = follow_up.user
        self.reap()
        self._check_one_at_a_time(user=user, key=key)
        busy = f"Busy: every live generation slot is taken. Try again in {RETRY_AFTER_S} s."
        if LiveGeneration.objects.filter(status=RUNNING).count() >= settings.SUANJING_MAX_LIVE_JOBS:
            follow_up.error = busy
            return "busy"
        try:
            engine, manifest = runtime.get_engine()
        except EngineUnavailable as exc:
            log.error("live generation unavailable", exc_info=True)
            follow_up.error = str(exc)[:300]
            return "no_model"
        prompt = _render_follow_up(manifest, problem, shown, follow_up.text, partial)
        owner = _owner_token()
        now = timezone.now()
        try:
            with transaction.atomic():
                _queue_starts()
                gen = LiveGeneration.objects.create(
                    key=key,
                    text=follow_up.text,
                    asker=user,
                    seed=seed,
                    prompt=prompt,
                    owner=owner,
                    lease_until=_lease_from(now),
                    watched_at=now,
                )
                others = LiveGeneration.objects.filter(status=RUNNING).exclude(pk=gen.pk)
                if others.count() >= settings.SUANJING_MAX_LIVE_JOBS:
                    raise _NoSlot
                self._check_one_at_a_time(user=user, key=key)
                follow_up.outcome, follow_up.live, follow_up.error = GENERATING, gen, ""
                follow_up.save(update_fields=["outcome", "live", "error"])
        except (IntegrityError, _NoSlot):
            # Every slot taken; or this follow-up is being answered already (a double click).
            follow_up.error = busy
            return "busy"
        transaction.on_commit(functools.partial(self._launch, gen.pk, owner, engine, manifest))
        return None

    @staticmethod
    def _join(gen: LiveGeneration, settle: Callable[..., Question]) -> Question | None:
        """Link the question to a running generation; None when it ended meanwhile. The generation's
        row is written first: the owner's last transaction writes it first too, so a join either comes
        before it (and is settled by it) or sees it ended."""
        with transaction.atomic():
            if not LiveGeneration.objects.filter(
                pk=gen.pk, status=RUNNING, cancel_requested=False
            ).update(watched_at=timezone.now()):
                return None
            return settle(outcome=GENERATING, refusal="", error="", live=gen)

    @staticmethod
    def _end_stopped(gen_id: int) -> None:
        """Mark a generation everyone stopped as ended; its owner finds it so at its next write and
        cancels its engine request."""
        with transaction.atomic():
            if LiveGeneration.objects.filter(
                pk=gen_id, status=RUNNING, cancel_requested=True
            ).update(
                status=LiveGeneration.Status.CANCELLED, finished=timezone.now(), error="stopped"
            ):
                fail_waiting(gen_id=gen_id, error=STOPPED)
        transaction.on_commit(functools.partial(wakeups.notify, gen_id))

    def stop(self, *, question: Question | FollowUp) -> bool:
        """The student's Stop: this question (or follow-up) stops waiting (failed, with a retry
        offered); the generation is cancelled, by whichever process runs it, when nobody else waits for
        it. False when it is not generating (any more)."""
        gen_id = question.live_id
        nobody_left = False
        with runtime.one_writer(), transaction.atomic():
            if gen_id is not None:  # the generation's row first (see _join)
                LiveGeneration.objects.filter(pk=gen_id).update(
                    cancel_requested=F("cancel_requested")
                )
            waiting = type(question).objects.filter(pk=question.pk, outcome=GENERATING)
            if not waiting.update(outcome=Question.Outcome.FAILED, error=STOPPED):
                return False
            if gen_id is not None and not is_anyone_waiting(gen_id):
                nobody_left = bool(
                    LiveGeneration.objects.filter(pk=gen_id, status=RUNNING).update(
                        cancel_requested=True
                    )
                )
        if gen_id is not None:
            wakeups.notify(gen_id)
        if nobody_left:
            with self._lock:
                run = self._runs.get(gen_id)
            if run is not None:
                run.cancel()  # ours: at once (the owner would see cancel_requested at its next flush)
            else:
                self.take_over(gen_id)  # settles it as cancelled if its owner is gone
        return True

    # -- takeover ----------------------------------------------------------------------------------

    def reap(self) -> None:
        """Take over (or settle) every running generation whose owner stopped renewing its lease."""
        expired = LiveGeneration.objects.filter(status=RUNNING).filter(
            Q(lease_until__lt=timezone.now()) | Q(lease_until__isnull=True)
        )
        for gen_id in list(expired.values_list("pk", flat=True)[:20]):
            self.take_over(gen_id)

    def take_over(self, gen_id: int) -> bool:
        """Take generation `gen_id` over if its lease ran out, and continue it in this process (or
        settle it: cancelled when nobody waits, failed when there is no engine). True when this call
        won the lease; of two processes trying at once, one does."""
        now = timezone.now()
        owner = _owner_token()
        try:
            with runtime.one_writer():
                won = (
                    LiveGeneration.objects.filter(pk=gen_id, status=RUNNING)
                    .filter(Q(lease_until__lt=now) | Q(lease_until__isnull=True))
                    .update(owner=owner, lease_until=_lease_from(now))
                )
        except DatabaseError:
            log.warning("live generation %s: taking it over failed", gen_id, exc_info=True)
            return False
        if not won:
            return False
        gen = LiveGeneration.objects.get(pk=gen_id)
        if gen.cancel_requested or not is_anyone_waiting(gen_id):
            log.info("live generation %s: its owner is gone and nobody waits; cancelled", gen_id)
            self._close(gen_id, owner, LiveGeneration.Status.CANCELLED, "cancelled", STRANDED)
            return True
        try:
            engine, manifest = runtime.get_engine()
        except EngineUnavailable as exc:
            log.error("live generation %s: no engine to continue it", gen_id, exc_info=True)
            self._close(gen_id, owner, LiveGeneration.Status.FAILED, str(exc), ENGINE_GONE)
            return True
        log.warning(
            "live generation %s: its owner stopped renewing its lease; continuing it here after "
            "event %d",
            gen_id,
            gen.events,
        )
        # After the caller's transaction (an ask inside one takes over too), as a start does.
        transaction.on_commit(functools.partial(self._launch, gen_id, owner, engine, manifest))
        return True

    def _close(self, gen_id: int, owner: str, status: str, error: str, question_error: str) -> None:
        """End a generation this process holds the lease of without a result."""
        with runtime.one_writer(), transaction.atomic():
            if LiveGeneration.objects.filter(pk=gen_id, owner=owner, status=RUNNING).update(
                status=status, finished=timezone.now(), error=error[:300]
            ):
                fail_waiting(gen_id=gen_id, error=question_error)
        wakeups.notify(gen_id)

    # -- running one -------------------------------------------------------------------------------

    def _launch(self, gen_id: int, owner: str, engine: Any, manifest: Any) -> None:
        run = _Run(gen_id=gen_id, owner=owner, engine=engine, manifest=manifest)
        with self._lock:
            self._runs[gen_id] = run
        threading.Thread(target=self._run, args=(run,), name=f"live-{gen_id}", daemon=True).start()

    def _run(self, run: _Run) -> None:
        try:
            self._generate(run)
        except (
            Exception
        ) as exc:  # the edge of the run: log it, fail the questions, keep the site up
            log.error("live generation %s failed", run.gen_id, exc_info=True)
            self._end(run, result=None, error=f"generation failed: {type(exc).__name__}")
        finally:
            with self._lock:
                if self._runs.get(run.gen_id) is run:
                    del self._runs[run.gen_id]
            run.done.set()
            connection.close()

    def _generate(self, run: _Run) -> None:
        from solver.engine import GenerationParams, GenerationResult
        from solver.prompts import get_family

        gen = LiveGeneration.objects.get(pk=run.gen_id)
        family = get_family(run.manifest.family)
        splitter = _StreamSplitter(implicit_think=family.implicit_think)
        splitter.feed(gen.generated)  # a takeover: those events are stored; this sets the mode
        writer = _Writer(run, gen)
        budget = settings.SUANJING_MAX_NEW_TOKENS - gen.tokens
        if budget <= 0:  # the dead owner had used the whole budget
            writer.step("", splitter.flush(), 0, final=True)
            result = GenerationResult("", 0, 0, "length", 0.0, 0.0, 0.0)
            self._end(run, result=self._whole(gen, result), family=family)
            return
        params = GenerationParams(
            max_new_tokens=budget,
            temperature=family.temperature,
            top_p=family.top_p,
            seed=gen.seed,
        )
        # A raw completion: after a takeover the text so far is part of the prompt, and the model
        # writes on from where it stopped.
        run.handle = run.engine.stream(gen.prompt + gen.generated, params)
        if run.cancelled:
            run.handle.cancel()
        pending: list[str] = []
        lock = threading.Lock()
        ended = threading.Event()
        failure: list[BaseException] = []

        def read() -> None:
            try:
                for piece in run.handle:
                    with lock:
                        pending.append(piece)
            except Exception as exc:  # reported by the run below
                failure.append(exc)
            finally:
                ended.set()

        threading.Thread(target=read, name=f"live-read-{run.gen_id}", daemon=True).start()
        while True:
            finished = ended.wait(FLUSH_S)
            with lock:
                pieces, pending[:] = list(pending), []
            text = "".join(pieces)
            events = splitter.feed(text) if text else []
            if finished:
                events += splitter.flush()
            control = writer.step(text, events, len(pieces), final=finished)
            if control is None:
                log.warning("live generation %s: taken over or ended elsewhere", run.gen_id)
                run.handle.cancel()
                ended.wait(30)
                return  # the taker stores it
            if not run.cancelled:
                if control.cancel_requested:
                    log.info("live generation %s: stopped", run.gen_id)
                    run.cancel()
                elif (
                    control.watched_at is None
                    or (timezone.now() - control.watched_at).total_seconds() > orphan_after_s()
                ):
                    log.info("live generation %s: nobody is waiting; cancelled", run.gen_id)
                    run.cancel()
            if finished:
                break
        for _ in range(20):  # the last pieces, should the final write have failed
            if not writer.unwritten or writer.step("", [], 0, final=True) is None:
                break
            time.sleep(0.25)
        if failure:
            raise failure[0]
        result = run.handle.result(timeout=60)
        self._end(run, result=self._whole(gen, result), family=family)

    @staticmethod
    def _whole(gen: LiveGeneration, result: Any) -> Any:
        """The whole generation's result: after a takeover, the text and tokens before it too."""
        if not gen.generated and not gen.tokens:
            return result
        from solver.engine import GenerationResult

        return GenerationResult(
            text=gen.generated + result.text,
            prompt_tokens=getattr(result, "prompt_tokens", 0),
            new_tokens=gen.tokens + result.new_tokens,
            finish_reason=result.finish_reason,
            ttft_ms=getattr(result, "ttft_ms", 0.0),
            tokens_per_s=getattr(result, "tokens_per_s", 0.0),
            elapsed_s=(timezone.now() - gen.created).total_seconds(),
            error=getattr(result, "error", None),
        )

    def _end(self, run: _Run, *, result: Any = None, family: Any = None, error: str = "") -> None:
        """Store the result and settle every waiting question, under the lease (a process that lost
        it stores nothing). The generation's row is written first (see _join)."""
        status = LiveGeneration.Status.DONE
        if result is None:
            status = LiveGeneration.Status.FAILED
        elif result.finish_reason == "cancelled":
            status = LiveGeneration.Status.CANCELLED
        elif result.finish_reason == "error":
            status = LiveGeneration.Status.FAILED
            error = result.error or "engine error"
        try:
            with runtime.one_writer(), transaction.atomic():
                if not LiveGeneration.objects.filter(
                    pk=run.gen_id, owner=run.owner, status=RUNNING
                ).update(status=status, finished=timezone.now(), error=error[:300]):
                    return
                gen = LiveGeneration.objects.get(pk=run.gen_id)
                question_ids = list(
                    Question.objects.filter(live_id=run.gen_id, outcome=GENERATING).values_list(
                        "pk", flat=True
                    )
                )
                if result is None:
                    fail_waiting(gen_id=run.gen_id, error=error)
                elif is_follow_up_key(gen.key):
                    store_follow_up_result(
                        job=gen, result=result, manifest=run.manifest, family=family
                    )
                else:
                    store_live_result(
                        job=gen,
                        question_ids=question_ids,
                        result=result,
                        manifest=run.manifest,
                        family=family,
                    )
        except Exception:
            log.error("storing live generation %s failed", run.gen_id, exc_info=True)
            self._close(
                run.gen_id,
                run.owner,
                LiveGeneration.Status.FAILED,
                "the answer could not be stored",
                "the answer could not be stored",
            )
        finally:
            wakeups.notify(run.gen_id)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Tests and shutdown: wait until this process runs no generation."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._runs:
                    return True
            time.sleep(0.05)
        return False


live_jobs = LiveJobs()

# The key of a follow-up's generation: "followup:<id>", one of its own (never joined by another).
FOLLOW_UP_KEY = "followup:"


def is_follow_up_key(key: str) -> bool:
    return key.startswith(FOLLOW_UP_KEY)


def _render_prompt(manifest: Any, text: str, rejected: str | None) -> str:
    from solver.prompts import get_family, render_retry

    family = get_family(manifest.family)
    return family.render(text) if rejected is None else render_retry(family, text, rejected)


def _render_follow_up(manifest: Any, problem: str, shown: str, text: str, partial: bool) -> str:
    from solver.prompts import get_family, render_follow_up

    return render_follow_up(get_family(manifest.family), problem, shown, text, partial=partial)


# -- following -------------------------------------------------------------------------------------


class _Following:
    """One client following a question's (or a follow-up's) live generation: each `step` is one short
    round of database reads (new events, or the bookkeeping of a quiet moment). `follow` drives it from
    a thread (WSGI); `afollow` from an event loop (ASGI), where a waiting stream holds no thread at all."""

    def __init__(self, question: Question | FollowUp, after: int) -> None:
        self.model = type(question)
        self.question_pk = question.pk
        self.gen_id = question.live_id
        self.last = after
        now = time.monotonic()
        self.marked = now - WATCH_EVERY_S  # mark at once
        self.asked = now  # when this question was last seen waiting
        self.quiet_since = now
        self.ended = self.gen_id is None or question.outcome != GENERATING

    def step(self) -> list[tuple[int, dict[str, str]] | None]:
        """What to send now: events, or [None] for a keep-alive; sets `ended` when the stream is over.
        An empty list: wait for news (`wakeups`) and step again."""
        gen_id = self.gen_id
        row = (
            LiveGeneration.objects.filter(pk=gen_id)
            .values("status", "events", "lease_until")
            .first()
        )
        if row is None:
            self.ended = True
            return []
        if row["events"] > self.last:
            # Read after the row: an owner writes its last events before it marks the row ended.
            out: list[tuple[int, dict[str, str]] | None] = []
            for seq, kind, text in (
                LiveEvent.objects.filter(generation_id=gen_id, seq__gt=self.last)
                .order_by("seq")
                .values_list("seq", "kind", "text")[:500]
            ):
                out.append((seq, {"type": kind, "text": text}))
                self.last = seq
            self.quiet_since = time.monotonic()
            return out
        if row["status"] != RUNNING:
            self.ended = True
            return []
        now = time.monotonic()
        if now - self.asked >= STOP_CHECK_S:
            if not self.model.objects.filter(pk=self.question_pk, outcome=GENERATING).exists():
                self.ended = True  # this student pressed Stop (others may still be waiting for it)
                return []
            self.asked = now
        if now - self.marked >= WATCH_EVERY_S:
            _mark_watched(gen_id)
            self.marked = now
        if row["lease_until"] is None or row["lease_until"] < timezone.now():
            live_jobs.take_over(gen_id)  # its owner died; if another process won, it continues it
        if now - self.quiet_since >= KEEPALIVE_S:
            self.quiet_since = now
            return [None]
        return []


def follow(
    *, question: Question | FollowUp, after: int = 0
) -> Iterator[tuple[int, dict[str, str]] | None]:
    """The stream of `question`'s (or a follow-up's) live generation after event `after`, from
    whichever process runs
    it: (seq, {"type": "reasoning"|"answer", "text"}) as stored, blocking for new ones, and None every
    KEEPALIVE_S while nothing comes. Ends when the generation ends or this question stops waiting for
    it (at once when it is not generating). Following counts as watching; a generation whose owner
    died is taken over from here."""
    following = _Following(question, after)
    while not following.ended:
        seen = wakeups.version(following.gen_id)
        items = following.step()
        yield from items
        if not items and not following.ended:
            wakeups.wait(following.gen_id, seen)


async def afollow(
    *, question: Question | FollowUp, after: int = 0
) -> AsyncIterator[tuple[int, dict[str, str]] | None]:
    """`follow` for an event loop: each round of reads runs in a worker thread for a few
    milliseconds; between rounds the stream waits on the loop, so a thousand quiet streams cost a
    thousand coroutines, not a thousand threads."""
    from asgiref.sync import sync_to_async

    following = _Following(question, after)
    step = sync_to_async(_step_closing, thread_sensitive=False)
    while not following.ended:
        seen = wakeups.version(following.gen_id)
        items = await step(following)
        for item in items:
            yield item
        if not items and not following.ended:
            await wakeups.await_news(following.gen_id, seen)


def _step_closing(following: _Following) -> list[tuple[int, dict[str, str]] | None]:
    """One step on a pool thread, whose database connection is dropped if it broke (as Django does
    around each request)."""
    from django.db import close_old_connections

    close_old_connections()
    return following.step()


def _mark_watched(gen_id: int) -> None:
    try:
        with runtime.one_writer():
            LiveGeneration.objects.filter(pk=gen_id, status=RUNNING).update(
                watched_at=timezone.now()
            )
    except DatabaseError:  # busy: the next mark will do
        log.warning("live generation %s: marking it watched failed", gen_id, exc_info=True)


def watch(*, question: Question | FollowUp) -> Question | FollowUp:
    """A look at `question` or a follow-up (its page, a poll, the end of a stream): counts as watching
    its live generation; takes the generation over when its owner died; settles it (failed, with a
    retry offered) when its generation is not running any more. Returns it as it is now."""
    if question.outcome != GENERATING:
        return question
    gen = (
        LiveGeneration.objects.filter(pk=question.live_id)
        .values("status", "lease_until", "watched_at")
        .first()
        if question.live_id is not None
        else None
    )
    now = timezone.now()
    if gen is None or gen["status"] != RUNNING:
        type(question).objects.filter(pk=question.pk, outcome=GENERATING).update(
            outcome=Question.Outcome.FAILED, error=STRANDED
        )
    elif gen["lease_until"] is None or gen["lease_until"] < now:
        live_jobs.take_over(question.live_id)
    elif gen["watched_at"] is None or (now - gen["watched_at"]).total_seconds() >= WATCH_EVERY_S:
        _mark_watched(question.live_id)
    question.refresh_from_db()
    return question


@transaction.atomic
def fail_questions(*, question_ids: list[int], error: str) -> None:
    Question.objects.filter(pk__in=question_ids, outcome=Question.Outcome.GENERATING).update(
        outcome=Question.Outcome.FAILED, error=error[:300]
    )


@transaction.atomic
def fail_waiting(*, gen_id: int, error: str) -> None:
    """Every question and follow-up still waiting for generation `gen_id` fails with `error`."""
    Question.objects.filter(live_id=gen_id, outcome=GENERATING).update(
        outcome=Question.Outcome.FAILED, error=error[:300]
    )
    FollowUp.objects.filter(live_id=gen_id, outcome=GENERATING).update(
        outcome=FollowUp.Outcome.FAILED, error=error[:300], finished=timezone.now()
    )


def is_anyone_waiting(gen_id: int) -> bool:
    """A question or a follow-up still waits for generation `gen_id`."""
    return (
        Question.objects.filter(live_id=gen_id, outcome=GENERATING).exists()
        or FollowUp.objects.filter(live_id=gen_id, outcome=GENERATING).exists()
    )


@transaction.atomic
def store_live_result(
    *, job: LiveGeneration, question_ids: list[int], result: Any, manifest: Any, family: Any
) -> Solution | None:
    """Parse a finished live generation, store it with its provenance and settle the waiting questions.

    No final answer, or a run truncated inside its reasoning (or ended by the loop guard) -> a failed
    solution (never served). A final answer is verified when it agrees with the problem's reference
    answer; one that contradicts it is stored for teachers and never served (the student gets the answer
    key); with no reference it is unverified, and labelled so. A final answer a teacher already rejected
    for this problem is stored as rejected again. A question that matched no banked problem becomes a
    *student's question* (Problem.source "student"): cached and served, listed apart from the bank."""
    from solver.answers import answers_equivalent, parse_output

    if result.finish_reason in ("cancelled", "error"):
        fail_questions(
            question_ids=question_ids,
            error="the generation was cancelled"
            if result.finish_reason == "cancelled"
            else (result.error or "engine error"),
        )
        return None
    parsed = parse_output(
        result.text, finish_reason=result.finish_reason, implicit_think=family.implicit_think
    )
    problem = Problem.objects.filter(pk=job.problem_id).first() if job.problem_id else None
    created = problem is None
    if created:
        problem = Problem.objects.create(
            text=job.text,
            lang=guess_lang(job.text),
            origin=Problem.Origin.LIVE,
            source=Problem.Source.STUDENT,
            added_by_id=job.asker_id,
        )
    evidence: dict[str, Any] = {"finish_reason": result.finish_reason}
    if job.seed is not None:
        evidence["seed"] = job.seed
    if job.rejected is not None:
        evidence["retry_after_rejected"] = job.rejected  # the prompt said this answer was wrong
    rejected = [
        s
        for s in problem.solutions.filter(status=Solution.Status.REJECTED).exclude(final=None)
        if parsed.final and answers_equivalent(parsed.final, s.final)
    ]
    if parsed.final is None or parsed.truncated or result.finish_reason == "loop":
        status = Solution.Status.FAILED
        evidence["why"] = (
            "the model repeated itself (stopped by the loop guard)"
            if result.finish_reason == "loop"
            else "truncated inside the reasoning"
            if parsed.truncated
            else "no final answer"
        )
    elif rejected:
        status = Solution.Status.REJECTED
        evidence["why"] = (
            f"the same final answer as answer {rejected[0].pk}, which a teacher rejected"
        )
    elif problem.reference_answer:
        agrees = answers_equivalent(parsed.final, problem.reference_answer)
        evidence.update(reference=problem.reference_answer, matches_reference=agrees)
        status = Solution.Status.VERIFIED if agrees else Solution.Status.UNVERIFIED
    else:
        status = Solution.Status.UNVERIFIED
    solution = Solution.objects.create(
        problem=problem,
        reasoning=parsed.reasoning,
        answer=parsed.answer,
        final=parsed.final[:500] if parsed.final else None,
        status=status,
        source=Solution.Source.LIVE,
        model_name=manifest.name,
        manifest_id=manifest.manifest_id,
        prompt_version=getattr(family, "version", "") or manifest.prompt_version,
        new_tokens=result.new_tokens,
        generation_s=round(result.elapsed_s, 3),
        finish_reason=result.finish_reason,
        evidence=evidence,
    )
    answered = status in (Solution.Status.VERIFIED, Solution.Status.UNVERIFIED)
    held = not answered and problem.is_waiting_for_teacher()
    now = timezone.now()
    for question in Question.objects.filter(
        pk__in=question_ids, outcome=Question.Outcome.GENERATING
    ):
        question.problem = problem
        # "Another answer" that came to nothing keeps showing the answer the student had, while it is
        # still servable (the failed attempt is stored all the same, for teachers).
        if answered or not (
            question.solution_id is not None
            and Solution.objects.servable().filter(pk=question.solution_id).exists()
        ):
            question.solution = solution
        question.latency_ms = (now - question.created).total_seconds() * 1000.0
        if answered:
            question.outcome = Question.Outcome.GENERATED
        elif held:
            question.outcome = Question.Outcome.HELD
        else:
            question.outcome = Question.Outcome.FAILED
            question.error = (
                LOOPED if result.finish_reason == "loop" else REJECTED if rejected else NO_FINAL
            )
        question.save(update_fields=["problem", "solution", "latency_ms", "outcome", "error"])
    if created:
        problem_id, text = problem.pk, problem.text
        bankcache.record(bankcache.Kind.PUT, problem_id=problem_id, text=text)
        transaction.on_commit(lambda: runtime.put_problem(problem_id, text))
    return solution


NO_REPLY = "The model did not finish its reply. 模型没有写完回答。"
NOBODY_WATCHED = (
    "The page was closed, so the reply was stopped. Try again. 页面已关闭，回答已停止，请再试一次。"
)


@transaction.atomic
def store_follow_up_result(
    *, job: LiveGeneration, result: Any, manifest: Any, family: Any
) -> FollowUp | None:
    """Keep a finished follow-up generation's reply on the follow-up that waits for it: answered when
    the model wrote a reply (after its reasoning, for a family that reasons first), failed when it was
    stopped, looped, broke, or never got past its reasoning. Nothing else is written: a follow-up is
    not a problem, its reply not an answer to one, and the cache never hears of it."""
    from solver.answers import parse_output

    follow_up = FollowUp.objects.filter(live_id=job.pk, outcome=GENERATING).first()
    if follow_up is None:
        return None  # stopped meanwhile
    follow_up.finish_reason = (result.finish_reason or "")[:16]
    follow_up.new_tokens = result.new_tokens
    follow_up.model_name = manifest.name[:100]
    follow_up.finished = timezone.now()
    parsed = parse_output(
        result.text, finish_reason=result.finish_reason, implicit_think=family.implicit_think
    )
    follow_up.reasoning, follow_up.reply = parsed.reasoning, parsed.answer.strip()
    if result.finish_reason in ("cancelled", "error"):
        # (A student's Stop settles the follow-up before this: a cancel here is nobody watching.)
        follow_up.outcome = FollowUp.Outcome.FAILED
        follow_up.error = (
            NOBODY_WATCHED
            if result.finish_reason == "cancelled"
            else (result.error or "engine error")
        )[:300]
    elif result.finish_reason == "loop":
        follow_up.outcome, follow_up.error = FollowUp.Outcome.FAILED, LOOPED
    elif not follow_up.reply:
        follow_up.outcome, follow_up.error = FollowUp.Outcome.FAILED, NO_REPLY
    else:
        follow_up.outcome, follow_up.error = FollowUp.Outcome.ANSWERED, ""
    follow_up.save()
    return follow_up


# -- worked solutions towards the answer key ------------------------------------------------------
#
# A student served a problem's reference answer as the answer key (no servable worked answer) queues a
# `tutor.tasks.generate_towards_answer` task for a db_worker: the model is given the problem and its
# known answer and asked for the steps (`solver.prompts.render_towards_answer`). The result is checked
# like any other answer (its final must be the reference) before it is stored as verified; otherwise it
# is stored as failed, evidence for a teacher, never served. Queued at most once per GUIDED_EVERY_H per
# problem (`Problem.guided_at`), however many students ask meanwhile, and never while one still waits in
# the queue. After GUIDED_MAX_FAILED attempts that missed the reference it is left to a teacher (their
# problem page says so): counted from the stored attempts, so no column is needed, and an attempt towards
# an older reference answer does not count, so correcting the reference answer starts afresh.

GUIDED_MAX_FAILED = 3
GUIDED_TASK = "tutor.tasks.generate_towards_answer"
# Ends that are not the model missing the reference: nobody let it finish.
_NOT_THE_MODELS_MISS = ("cancelled", "error")


def _guided_due() -> Any:
    import datetime as dt

    return timezone.now() - dt.timedelta(hours=GUIDED_EVERY_H)


def _is_a_miss(evidence: Any, reference: str) -> bool:
    """A stored failed attempt the model finished, towards this reference answer."""
    return (
        bool(reference)
        and isinstance(evidence, dict)
        and evidence.get("reference") == reference
        and evidence.get("finish_reason") not in _NOT_THE_MODELS_MISS
    )


def _failed_attempts() -> Any:
    return Solution.objects.filter(source=Solution.Source.GUIDED, status=Solution.Status.FAILED)


def guided_failures(*, problem: Problem) -> int:
    """Worked solutions towards `problem`'s current reference answer that the model finished without
    reaching it (stored failed; a cancelled or broken generation is not counted)."""
    attempts = _failed_attempts().filter(problem=problem).values_list("evidence", flat=True)
    return sum(1 for evidence in attempts if _is_a_miss(evidence, problem.reference_answer))


def guided_given_up_ids() -> list[int]:
    """Problems whose worked solution was given up (GUIDED_MAX_FAILED misses) and that still have no
    servable answer: the teachers' to-do (the bank's filter). Failed attempts are few, so one pass."""
    misses: dict[int, int] = {}
    for problem_id, evidence, reference in _failed_attempts().values_list(
        "problem_id", "evidence", "problem__reference_answer"
    ):
        if _is_a_miss(evidence, reference):
            misses[problem_id] = misses.get(problem_id, 0) + 1
    given_up = [pid for pid, count in misses.items() if count >= GUIDED_MAX_FAILED]
    served = set(
        Solution.objects.servable()
        .filter(problem_id__in=given_up)
        .values_list("problem_id", flat=True)
    )
    return [pid for pid in given_up if pid not in served]


def is_guided_given_up(*, problem: Problem) -> bool:
    """The model missed the reference answer GUIDED_MAX_FAILED times: no more attempts, a teacher's turn."""
    return guided_failures(problem=problem) >= GUIDED_MAX_FAILED


def is_guided_on_its_way(*, problem: Problem) -> bool:
    """A worked solution towards `problem`'s reference answer waits in the task queue or is being
    written (what students are told while they are shown the answer key)."""
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    if not problem.reference_answer:
        return False
    return DBTaskResult.objects.filter(
        task_path=GUIDED_TASK,
        status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING],
        args_kwargs__args__0=problem.pk,
    ).exists()


def queue_guided_solution(*, problem: Problem) -> bool:
    """Queue a worked solution towards `problem`'s reference answer, unless one was queued, started or
    tried within GUIDED_EVERY_H, one still waits in the queue, or the model already missed the reference
    GUIDED_MAX_FAILED times. True when this call queued it."""
    from django.db.models import Q

    if not problem.reference_answer:
        return False
    due = _guided_due()
    if problem.guided_at is not None and problem.guided_at >= due:
        return False  # read first: most answer-key hits then write nothing
    if is_guided_given_up(problem=problem) or is_guided_on_its_way(problem=problem):
        return False  # a teacher's turn; or no worker took the last one yet (one is enough)
    now = timezone.now()
    with transaction.atomic():
        claimed = (
            Problem.objects.filter(pk=problem.pk)
            .filter(Q(guided_at__isnull=True) | Q(guided_at__lt=due))
            .update(guided_at=now)
        )
        if not claimed:
            return False  # another request queued it a moment ago
        runtime.enqueue("generate_towards_answer", problem.pk)
    problem.guided_at = now
    return True


def work_on_guided(*, problem_id: int) -> str:
    """Generate and store a worked solution towards problem `problem_id`'s reference answer (the task's
    work, in a db_worker). Returns "verified", "failed", "not_needed" (the problem is gone, has no
    reference answer, or has a servable answer by now) or "given_up" (GUIDED_MAX_FAILED attempts missed
    the reference already). Raises EngineUnavailable."""
    from solver.engine import GenerationParams
    from solver.prompts import get_family, render_towards_answer

    problem = Problem.objects.filter(pk=problem_id).first()
    if problem is None or not problem.reference_answer or problem.best_solution() is not None:
        return "not_needed"
    if is_guided_given_up(problem=problem):
        return "given_up"
    # Started: a long generation keeps the next ask from queueing another one for the same problem.
    Problem.objects.filter(pk=problem_id).update(guided_at=timezone.now())
    engine, manifest = runtime.get_engine()
    family = get_family(manifest.family)
    reference = problem.reference_answer
    params = GenerationParams(
        max_new_tokens=settings.SUANJING_MAX_NEW_TOKENS,
        temperature=family.temperature,
        top_p=family.top_p,
    )
    generation = engine.stream(render_towards_answer(family, problem.text, reference), params)
    for _ in generation:
        pass  # nobody watches this one: only the result matters
    solution = store_guided_result(
        problem_id=problem_id,
        reference=reference,
        result=generation.result(),
        manifest=manifest,
        family=family,
    )
    return solution.status if solution is not None else "not_needed"


@transaction.atomic
def store_guided_result(
    *, problem_id: int, reference: str, result: Any, manifest: Any, family: Any
) -> Solution | None:
    """Check a generation towards `reference` and store it: verified when its final answer is the
    reference, else failed (with why) — never served. None when the problem was deleted meanwhile."""
    from solver.answers import answers_equivalent, parse_output

    problem = Problem.objects.filter(pk=problem_id).first()
    if problem is None:
        return None
    parsed = parse_output(
        result.text, finish_reason=result.finish_reason, implicit_think=family.implicit_think
    )
    evidence: dict[str, Any] = {
        "guided": "generated towards the reference answer",
        "reference": reference,
        "finish_reason": result.finish_reason,
    }
    final = parsed.final
    if result.finish_reason in ("cancelled", "error"):
        why = result.error or f"the generation ended: {result.finish_reason}"
    elif result.finish_reason == "loop":
        why = "the model repeated itself (stopped by the loop guard)"
    elif parsed.truncated:
        why = "truncated inside the reasoning"
    elif final is None:
        why = "no final answer"
    elif not answers_equivalent(final, reference):
        why = f"its final answer {final[:200]!r} is not the reference answer"
        evidence["matches_reference"] = False
    else:
        why = ""
        evidence["matches_reference"] = True
    if why:
        evidence["why"] = why
    return Solution.objects.create(
        problem=problem,
        reasoning=parsed.reasoning,
        answer=parsed.answer,
        final=final[:500] if final else None,
        status=Solution.Status.FAILED if why else Solution.Status.VERIFIED,
        source=Solution.Source.GUIDED,
        model_name=manifest.name[:100],
        manifest_id=manifest.manifest_id,
        prompt_version=f"{getattr(family, 'version', '') or manifest.prompt_version}+towards-answer",
        new_tokens=result.new_tokens,
        generation_s=round(result.elapsed_s, 3),
        finish_reason=(result.finish_reason or "")[:16],
        evidence=evidence,
    )
