"""The answer cache of a site process, from its start to its saves: loaded, kept in step, shared.

Owns the lifecycle of this process's `solver.cache.SemanticCache` (runtime keeps it in its slot and
calls `follow` for it), the change feed (`BankChange` rows: `record` appends one in the transaction of
the change) and the saved cache in `VAR_DIR/cache/<embedder name>/`.
Does not own: matching (`solver.cache`), the vectors file (`solver.vectors`), or deciding which writes
change the bank (the services that make them call `record`).

Start (the first `follow` of a process, or the first after `runtime.use_cache(None)`): a background
thread loads the embedder (its model's first call beside it, in another thread) and the saved cache
(memory-mapped, nothing embedded), while the calling thread
reads the feed's newest seq P, then every (id, text) of the bank and the accepted aliases and blocks (in
that order: a change committed after P is applied again from the feed, which is harmless). The thread
then reconciles the cache with that snapshot: only the texts that differ are normalized and embedded,
with their vectors taken from the vector store `VAR_DIR/vectors.sqlite` where it has them. A saved cache
that is missing, damaged, or made by another embedder or normalizer is logged and the cache is built
from the store and the snapshot; the start never raises into an ask. An ask waits for a start at most
`ASK_WAIT_S` counted from when the start began (then it is a miss and goes live); `runtime.get_cache()`
waits for it. About 100 000 problems with a saved cache are ready in seconds; without one, a first
start embeds the whole bank (tens of minutes on two cores) while the site keeps answering (misses).

The feed: at most every `POLL_S`, the thread of an ask reads the rows after the cache's position (one
indexed query, nothing when nothing changed) and resolves them against the database as it is now: the
current text of every problem named by a put or a drop row (gone: removed), whether each named alias
or block still exists. So rows can be applied in any order and any number of times. A few texts are
embedded in the asking thread; more (a pack's thousands) in a background thread while asks go on with
the cache as it was. A process that fell behind a pruned part of the feed, or whose position is past
the feed's end (another database), reconciles with the whole bank instead. On PostgreSQL a sequence
number can become visible after a higher one (transactions commit out of order): the numbers skipped
are asked for again at every poll for `GAP_WAIT_S`. SQLite hands them out in commit order.

Saving: after `SAVE_AFTER_CHANGES` feed rows, or `SAVE_AFTER_S` after at least one, a background
thread saves the cache (`SemanticCache.save`: a new generation, one atomic rename), with the seq it
includes, under a file lock so that one process of the machine saves at a time; a process that finds
the saved seq already at its own skips the save. After a save, the saving thread prunes the rows the
save includes that are older than a day before it, the newest row always kept, so that a process that
fell behind sees the hole (above).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Max, Min, Q
from django.utils import timezone

from tutor.models import BankChange, MatchBlock, Problem, ProblemAlias
from tutor.services.text import question_key

log = logging.getLogger(__name__)

ASK_WAIT_S = 10.0  # an ask waits this long after a start began for the cache; later asks miss
POLL_S = 0.5  # the feed is read at most this often
INLINE_TEXTS = 8  # up to this many changed texts are embedded in the asking thread
FEED_RECONCILE_AT = 20_000  # more rows than this behind: reconcile with the whole bank instead
GAP_WAIT_S = 600.0  # a skipped seq is asked for again this long (PostgreSQL only)
MAX_GAPS = 1_000  # more skipped seqs at once than this: reconcile instead of tracking them
SAVE_AFTER_CHANGES = 1_000
SAVE_AFTER_S = 300.0
RETRY_START_S = 30.0  # after a failed start, asks try again this often
PRUNE_OLDER_THAN = dt.timedelta(days=1)
WARM_UP_TEXT = "warm up"  # embedded once after a start: the embedder's first call loads its model
_CHUNK = 500  # ids per `IN (...)` query (SQLite's limit on bound parameters)
_GENERATION_RE = re.compile(r"gen-[0-9]{20}-[0-9]{1,10}")  # solver.cache's generation folders


# -- recording changes (the services that change the bank call these) --------------------------------

Kind = BankChange.Kind  # put, drop, alias, unalias, block, unblock


def record(kind: str, *, problem_id: int, text: str = "") -> None:
    """Append one change to the feed. Call it inside the transaction that makes the change, so that the
    row commits with it or not at all. `kind` is a `BankChange.Kind`; `text` is the problem's text (put)
    or the wording (alias, unalias, block, unblock), empty for a drop."""
    BankChange.objects.create(kind=kind, problem_id=problem_id, text=text)


def record_many(changes: Iterable[tuple[str, int, str]]) -> int:
    """Append many changes, (kind, problem id, text) each, in the caller's transaction; returns how many."""
    rows = [BankChange(kind=k, problem_id=p, text=t) for k, p, t in changes]
    BankChange.objects.bulk_create(rows, batch_size=_CHUNK)
    return len(rows)


# -- where things are -------------------------------------------------------------------------------


def cache_folder(var_dir: Path, embedder_name: str) -> Path:
    """`VAR_DIR/cache/<embedder name>/` (characters other than letters, digits, '.', '-' and '_' -> '_')."""
    return Path(var_dir) / "cache" / re.sub(r"[^A-Za-z0-9._-]", "_", embedder_name)


def saved_position(folder: Path) -> int | None:
    """The feed seq the saved cache in `folder` includes, or None (no saved cache, or unreadable).
    Reads the small CURRENT and manifest.json files that `SemanticCache.save` writes."""
    try:
        generation = (folder / "CURRENT").read_text(encoding="utf-8").strip()
        if not _GENERATION_RE.fullmatch(generation):
            return None
        manifest = json.loads((folder / generation / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    position = manifest.get("feed_position") if isinstance(manifest, dict) else None
    return position if isinstance(position, int) else None


# -- the state of this process ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    """What a start needs from the settings, read in the thread that asked for it."""

    embedder: str
    backend: str
    var_dir: Path
    threshold: float | None
    load_embedder: Callable[..., Any]


@dataclass(frozen=True)
class _Snapshot:
    """The database as a start saw it: the feed's newest seq, then the bank and the corrections."""

    position: int
    bank: list[tuple[str, str]]
    aliases: list[tuple[str, str]]
    blocks: list[tuple[str, str]]


@dataclass(frozen=True)
class StartInfo:
    """How this process's cache started (for logs and tests)."""

    loaded: bool  # from the saved folder; False: built from the store and the bank
    reason: str | None  # why the saved folder was not used (None: it was, or there was none)
    problems: int
    embedded: int  # texts embedded by the start (the others came from the saved cache or the store)
    changed: int  # problems added, replaced or removed by the reconcile
    seconds: float
    folder: Path


@dataclass
class _Start:
    config: _Config
    began: float = field(default_factory=time.monotonic)
    snapshot: _Snapshot | None = None
    snapshot_error: BaseException | None = None
    snapshot_ready: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    warm: threading.Event = field(default_factory=threading.Event)  # done, and the embedder loaded
    error: BaseException | None = None
    finished: float | None = None
    info: StartInfo | None = None


@dataclass
class _Followed:
    """A cache this module started, and where it is in the feed."""

    cache: Any
    folder: Path
    position: int
    gaps: dict[int, float] = field(default_factory=dict)  # skipped seq -> when it was first missed
    polled_at: float = 0.0
    poll_lock: threading.Lock = field(default_factory=threading.Lock)
    applying: bool = False  # a background apply or reconcile is in flight: polls wait for it
    unsaved: int = 0  # changes applied since the last save
    saved_at: float = field(default_factory=time.monotonic)
    saving: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Follower:
    """This process's start and followed cache (a forked child begins with a fresh one)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.start: _Start | None = None
        self.followed: _Followed | None = None
        self.last_start: StartInfo | None = None


_follower = _Follower()
_follower_lock = threading.Lock()


def _this_process() -> _Follower:
    global _follower
    with _follower_lock:
        if _follower.pid != os.getpid():
            # A forked child keeps a copy of the parent's cache but none of its threads or locks.
            old, _follower = _follower, _Follower()
            if old.followed is not None:
                _follower.followed = _Followed(
                    cache=old.followed.cache,
                    folder=old.followed.folder,
                    position=old.followed.position,
                    gaps=dict(old.followed.gaps),
                )
        return _follower


def last_start() -> StartInfo | None:
    """How this process's cache last started, or None."""
    return _this_process().last_start


# -- the entry point --------------------------------------------------------------------------------


def follow(slot: Any, *, wait: float | None = None) -> Any | None:
    """The cache in `slot` (runtime's: `.cache` under `.cache_lock`), kept in step with the feed.

    A cache someone installed (tests, benchmarks) is returned as it is and not followed. With none, a
    start begins (see the module docstring). `wait=None` waits for it and raises the start's error;
    with a number (an ask), waits at most that long from when the start began and returns None when
    the cache is not ready (the ask is then a miss)."""
    follower = _this_process()
    with slot.cache_lock:
        current = slot.cache
        followed = follower.followed
        if current is not None and (followed is None or current is not followed.cache):
            return current
        if current is None:
            if followed is not None:
                follower.followed = None  # dropped (use_cache(None)): start again
            start = follower.start
            if start is None or _should_start_again(start, asking=wait is not None):
                start = _begin(follower, slot)
    if current is None:
        remaining = None if wait is None else max(0.0, wait - (time.monotonic() - start.began))
        if not start.done.wait(remaining):
            return None
        if start.error is not None:
            if wait is None:
                raise start.error
            return None
        if wait is None:
            start.warm.wait()  # what is asked next may need the embedder: it is loaded by then
        with slot.cache_lock:
            current = slot.cache
            followed = follower.followed
        if current is None or followed is None or current is not followed.cache:
            return current
    _maybe_poll(followed)
    return current


def _should_start_again(start: _Start, *, asking: bool) -> bool:
    """A finished start whose cache was dropped, or a failed one (an ask retries it only now and
    then; `get_cache()` at once)."""
    if not start.done.is_set():
        return False
    if start.error is None:
        return True
    return not asking or time.monotonic() - (start.finished or 0.0) >= RETRY_START_S


def _begin(follower: _Follower, slot: Any) -> _Start:
    """A new start: its thread loads the embedder and the saved cache while this thread reads the
    database (the caller's connection: a test's transaction sees its own rows). Called with the slot's
    lock held."""
    from solver import embed

    threshold = settings.SUANJING_CACHE_THRESHOLD
    start = _Start(
        _Config(
            embedder=settings.SUANJING_EMBEDDER,
            backend=settings.SUANJING_EMBEDDER_BACKEND,
            var_dir=Path(settings.VAR_DIR),
            threshold=float(threshold) if threshold else None,
            load_embedder=embed.load_embedder,
        )
    )
    follower.start = start
    threading.Thread(
        target=_run_start, args=(follower, slot, start), name="answer-cache-start", daemon=True
    ).start()
    try:
        start.snapshot = _read_snapshot()
    except BaseException as exc:  # handed to the start thread, which reports it
        start.snapshot_error = exc
    finally:
        start.snapshot_ready.set()
    return start


def _read_snapshot() -> _Snapshot:
    position = _feed_newest()
    bank = [
        (str(pk), text)
        for pk, text in Problem.objects.values_list("pk", "text").iterator(chunk_size=5000)
    ]
    aliases = [
        (text, str(pid))
        for text, pid in ProblemAlias.objects.filter(
            status=ProblemAlias.Status.ACCEPTED
        ).values_list("text", "problem_id")
    ]
    blocks = [
        (text, str(pid)) for text, pid in MatchBlock.objects.values_list("text", "problem_id")
    ]
    return _Snapshot(position, bank, aliases, blocks)


def _feed_newest() -> int:
    """The newest seq (0: none). One min/max per query: SQLite reads the index for MIN(id) or MAX(id)
    alone, but scans the table for both at once."""
    return BankChange.objects.aggregate(top=Max("id"))["top"] or 0


def _feed_oldest() -> int | None:
    return BankChange.objects.aggregate(low=Min("id"))["low"]


# -- the start thread -------------------------------------------------------------------------------


def _run_start(follower: _Follower, slot: Any, start: _Start) -> None:
    config = start.config
    followed = None
    try:
        started = time.perf_counter()
        embedder = _Counted(
            config.load_embedder(
                config.embedder,
                backend=config.backend,
                cache_dir=config.var_dir / "embedders",
            )
        )
        # The embedder's first call loads its model (seconds): in parallel with loading the saved
        # cache, not in a student's first lookup (a start that must embed waits for it anyway).
        threading.Thread(
            target=_warm_up, args=(embedder.inner, start), name="answer-cache-warm", daemon=True
        ).start()
        folder = cache_folder(config.var_dir, embedder.name)
        cache, reason = _load_saved(folder, embedder, config)
        start.snapshot_ready.wait()
        if start.snapshot_error is not None:
            raise start.snapshot_error
        snapshot = start.snapshot
        assert snapshot is not None
        sync = _reconcile(
            cache, snapshot.bank, snapshot.aliases, snapshot.blocks, snapshot.position
        )
        cache.embedder = embedder.inner  # counting was for the start only
        info = StartInfo(
            loaded=cache.loaded_from is not None,
            reason=reason,
            problems=len(cache),
            embedded=embedder.texts,
            changed=sync.added + sync.replaced + sync.removed,
            seconds=time.perf_counter() - started,
            folder=folder,
        )
        with slot.cache_lock:
            if follower.start is start and slot.cache is None:
                followed = _Followed(cache=cache, folder=folder, position=snapshot.position)
                follower.followed = followed
                follower.last_start = info
                slot.cache = cache
        start.info = info
        log.info(
            "answer cache: %d problems %s in %.1f s (%d embedded, %d changed since it was saved; "
            "feed at %d)",
            info.problems,
            f"loaded from {folder}" if info.loaded else "built from the vector store and the bank",
            info.seconds,
            info.embedded,
            info.changed,
            snapshot.position,
        )
    except Exception as exc:  # the edge of this thread: asks miss meanwhile, a later ask retries
        log.error("answer cache: the start failed; questions are answered live", exc_info=True)
        start.error = exc
    finally:
        start.finished = time.monotonic()
        start.done.set()
        if start.error is not None:
            start.warm.set()  # nobody waits for an embedder that will not be used
    if followed is not None and (not info.loaded or info.changed or sync.corrections):
        _save(followed, force=True)


def _warm_up(embedder: Any, start: _Start) -> None:
    try:
        embedder.embed([WARM_UP_TEXT])
    except Exception:  # the edge of this thread: the start itself reports a broken embedder
        log.warning("answer cache: the embedder failed its first call", exc_info=True)
    finally:
        start.warm.set()


def _load_saved(folder: Path, embedder: Any, config: _Config) -> tuple[Any, str | None]:
    """The saved cache in `folder`, or a new empty one and why the saved one was not used."""
    from solver.cache import CacheFileError, SemanticCache

    kwargs: dict[str, Any] = {"store": _open_store(config.var_dir)}
    if config.threshold:
        kwargs["threshold"] = config.threshold
    if not (folder / "CURRENT").exists() and not (folder / "entries.json").exists():
        log.info("answer cache: no saved cache in %s yet; building it", folder)
        return SemanticCache(embedder, **kwargs), None
    try:
        return SemanticCache.load(folder, embedder, **kwargs), None
    except CacheFileError as exc:
        reason = str(exc)
        log.warning(
            "answer cache: the saved cache cannot be used (%s); building it from the vector store "
            "and the bank",
            reason,
        )
    except Exception as exc:  # a damaged file the loader did not foresee must not stop the site
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "answer cache: loading %s failed unexpectedly; building it from the vector store and "
            "the bank",
            folder,
            exc_info=True,
        )
    return SemanticCache(embedder, **kwargs), reason


def _open_store(var_dir: Path) -> Any:
    from solver.vectors import VectorStore, VectorStoreError

    path = var_dir / "vectors.sqlite"
    try:
        return VectorStore(path)
    except VectorStoreError:
        log.warning("answer cache: no vector store (every text is embedded)", exc_info=True)
        return None


def _reconcile(
    cache: Any,
    bank: list[tuple[str, str]],
    aliases: list[tuple[str, str]],
    blocks: list[tuple[str, str]],
    position: int,
) -> Any:
    """`cache.reconcile`, once more without the vector store if the store fails."""
    from solver.vectors import VectorStoreError

    try:
        return cache.reconcile(bank, aliases=aliases, blocks=blocks, feed_position=position)
    except VectorStoreError:
        log.warning("answer cache: the vector store failed; embedding without it", exc_info=True)
        cache.store = None
        return cache.reconcile(bank, aliases=aliases, blocks=blocks, feed_position=position)


class _Counted:
    """The embedder, counting the texts a start embeds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.texts = 0

    def embed(self, texts: list[str]) -> Any:
        self.texts += len(texts)
        return self.inner.embed(texts)


# -- the feed ---------------------------------------------------------------------------------------


@dataclass
class _Changes:
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    removed_aliases: list[str] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)
    removed_blocks: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, cache: Any, position: int) -> Any:
        return cache.apply(
            added=self.added,
            removed=self.removed,
            aliases=self.aliases,
            blocks=self.blocks,
            removed_aliases=self.removed_aliases,
            removed_blocks=self.removed_blocks,
            feed_position=position,
        )


def _maybe_poll(followed: _Followed) -> None:
    now = time.monotonic()
    if now - followed.polled_at < POLL_S or not followed.poll_lock.acquire(blocking=False):
        return
    try:
        if followed.applying:
            return
        followed.polled_at = now
        _poll(followed)
    except DatabaseError:  # a locked or unreachable database: the next poll tries again
        log.warning("answer cache: reading the change feed failed", exc_info=True)
    finally:
        followed.poll_lock.release()
    _maybe_save(followed)


def _poll(followed: _Followed) -> None:
    """Read and apply the feed after `followed.position` (called with its poll lock held)."""
    position = followed.position
    high = _feed_newest()
    if high == position and not followed.gaps:
        return  # nothing new: the usual poll is this one query (the primary key's last entry)
    low = _feed_oldest()
    if high < position or (low is not None and low > position + 1 and high > position):
        # Past the feed's end (another database) or behind a pruned part of it.
        log.warning(
            "answer cache: the change feed does not continue at %d (it holds %s..%s); "
            "comparing the whole bank",
            position,
            low,
            high,
        )
        _reconcile_all(followed)
        return
    if high - position > FEED_RECONCILE_AT:
        _reconcile_all(followed)
        return
    _expire_gaps(followed)
    wanted = Q(id__gt=position)
    if followed.gaps:
        wanted |= Q(id__in=list(followed.gaps))
    rows = list(
        BankChange.objects.filter(wanted)
        .order_by("id")
        .values_list("id", "kind", "problem_id", "text")
    )
    if not rows:
        return
    seen = {row[0] for row in rows}
    for seq in seen:
        followed.gaps.pop(seq, None)
    newest = max(position, max(seen))
    skipped = set(range(position + 1, newest)) - seen
    if len(skipped) + len(followed.gaps) > MAX_GAPS:
        _reconcile_all(followed)
        return
    for seq in skipped:
        followed.gaps[seq] = time.monotonic()
    changes = _resolve(rows)
    if len(changes.added) <= INLINE_TEXTS:
        _apply(followed, changes, newest, len(rows))
    else:
        followed.applying = True
        threading.Thread(
            target=_apply,
            args=(followed, changes, newest, len(rows)),
            name="answer-cache-apply",
            daemon=True,
        ).start()


def _expire_gaps(followed: _Followed) -> None:
    now = time.monotonic()
    for seq, since in list(followed.gaps.items()):
        if now - since > GAP_WAIT_S:
            del followed.gaps[seq]  # a rolled-back transaction's number, most likely


def _resolve(rows: list[tuple[int, str, int, str]]) -> _Changes:
    """The rows' changes as the database holds them now (so order and repeats do not matter)."""
    kinds = BankChange.Kind
    changes = _Changes()
    problem_ids = {pid for _, kind, pid, _ in rows if kind in (kinds.PUT, kinds.DROP)}
    texts: dict[int, str] = {}
    ordered = sorted(problem_ids)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        texts.update(Problem.objects.filter(pk__in=chunk).values_list("pk", "text"))
    for pid in ordered:
        if pid in texts:
            changes.added.append((str(pid), texts[pid]))
        else:
            changes.removed.append(str(pid))

    wordings = {
        question_key(text): text
        for _, kind, _, text in rows
        if kind in (kinds.ALIAS, kinds.UNALIAS) and text
    }
    accepted: dict[str, tuple[str, int]] = {}
    keys = sorted(wordings)
    for start in range(0, len(keys), _CHUNK):
        for key, text, pid in (
            ProblemAlias.objects.filter(
                key__in=keys[start : start + _CHUNK], status=ProblemAlias.Status.ACCEPTED
            )
            .order_by("id")
            .values_list("key", "text", "problem_id")
        ):
            accepted[key] = (text, pid)  # accept_alias keeps one accepted alias per wording
    for key, text in wordings.items():
        if key in accepted:
            alias_text, pid = accepted[key]
            changes.aliases.append((alias_text, str(pid)))
        else:
            changes.removed_aliases.append(text)

    pairs = {
        (question_key(text), pid): text
        for _, kind, pid, text in rows
        if kind in (kinds.BLOCK, kinds.UNBLOCK) and text
    }
    existing: set[tuple[str, int]] = set()
    block_keys = sorted({key for key, _ in pairs})
    for start in range(0, len(block_keys), _CHUNK):
        existing.update(
            MatchBlock.objects.filter(key__in=block_keys[start : start + _CHUNK]).values_list(
                "key", "problem_id"
            )
        )
    for (key, pid), text in pairs.items():
        if (key, pid) in existing:
            changes.blocks.append((text, str(pid)))
        else:
            changes.removed_blocks.append((text, str(pid)))
    return changes


def _apply(followed: _Followed, changes: _Changes, position: int, rows: int) -> None:
    """Apply resolved changes; `rows` feed rows count towards the next save (this process's own
    changes too: it applied them at once, so the cache finds nothing new in them)."""
    from solver.vectors import VectorStoreError

    started = time.perf_counter()
    try:
        try:
            report = changes.apply(followed.cache, position)
        except VectorStoreError:
            log.warning(
                "answer cache: the vector store failed; embedding without it", exc_info=True
            )
            followed.cache.store = None
            report = changes.apply(followed.cache, position)
        with followed.lock:
            followed.position = max(followed.position, position)
            followed.unsaved += rows
        if report.changed:
            log.info(
                "answer cache: feed to %d: %d added, %d replaced, %d removed, %d corrections "
                "(%d embedded) in %.0f ms",
                position,
                report.added,
                report.replaced,
                report.removed,
                report.corrections,
                report.embedded,
                (time.perf_counter() - started) * 1000,
            )
    except Exception:  # the edge of a background apply: the rows are read again at the next poll
        log.error("answer cache: applying the change feed failed", exc_info=True)
    finally:
        followed.applying = False


def _reconcile_all(followed: _Followed) -> None:
    """Compare the whole bank with the cache (the feed cannot say what changed); the comparison and
    any embedding run in a background thread."""
    snapshot = _read_snapshot()
    followed.gaps.clear()

    def run() -> None:
        try:
            report = _reconcile(
                followed.cache,
                snapshot.bank,
                snapshot.aliases,
                snapshot.blocks,
                snapshot.position,
            )
            with followed.lock:
                followed.position = snapshot.position
                followed.unsaved += report.added + report.replaced + report.removed
            log.info(
                "answer cache: reconciled with the bank at feed %d: %d added, %d replaced, "
                "%d removed (%d embedded)",
                snapshot.position,
                report.added,
                report.replaced,
                report.removed,
                report.embedded,
            )
        except Exception:  # the edge of a background reconcile: the next poll sees the same hole
            log.error("answer cache: reconciling with the bank failed", exc_info=True)
        finally:
            followed.applying = False

    followed.applying = True
    threading.Thread(target=run, name="answer-cache-reconcile", daemon=True).start()


# -- saving and pruning -----------------------------------------------------------------------------


def _maybe_save(followed: _Followed) -> None:
    with followed.lock:
        due = followed.unsaved >= SAVE_AFTER_CHANGES or (
            followed.unsaved > 0 and time.monotonic() - followed.saved_at >= SAVE_AFTER_S
        )
        if not due or followed.saving:
            return
        followed.saving = True
    threading.Thread(target=_save, args=(followed,), name="answer-cache-save", daemon=True).start()


def _save(followed: _Followed, *, force: bool = False) -> None:
    """Save the cache, one process at a time (a file lock), unless another process has saved this far
    (`force`: save anyway, as a start that found the saved cache unusable or behind does)."""
    from solver.cache import CacheFileError

    with followed.lock:
        followed.saving = True
        position, unsaved = followed.position, followed.unsaved
    folder = followed.folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"{folder.name}.lock", "a") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process is saving; the next poll that finds changes tries again
            saved = saved_position(folder)
            if not force and saved is not None and saved >= position:
                log.info("answer cache: already saved at feed %d by another process", saved)
                _saved(followed, unsaved)
                return
            started = time.perf_counter()
            generation = followed.cache.save(folder, feed_position=position)
            log.info(
                "answer cache: saved %d problems at feed %d in %.1f s (%s)",
                len(followed.cache),
                position,
                time.perf_counter() - started,
                generation.name,
            )
            _saved(followed, unsaved)
        _prune_after_save(position, timezone.now())
    except (OSError, CacheFileError):
        log.warning("answer cache: saving failed; trying again later", exc_info=True)
        with followed.lock:
            followed.saved_at = time.monotonic()  # not again at once
    finally:
        with followed.lock:
            followed.saving = False


def _saved(followed: _Followed, unsaved: int) -> None:
    with followed.lock:
        followed.unsaved = max(0, followed.unsaved - unsaved)
        followed.saved_at = time.monotonic()


def _prune_after_save(position: int, when: dt.datetime) -> None:
    """`prune_feed` after a save, in the saving thread (its own database connection, closed after; a
    locked database only delays the prune to the next save)."""
    from django.db import connections

    try:
        cutoff = when - PRUNE_OLDER_THAN
        if BankChange.objects.filter(id__lte=position, created__lt=cutoff).exists():
            deleted = prune_feed(upto=position, saved_at=when)
            log.info("answer cache: pruned %d feed rows up to %d", deleted, position)
    except Exception:  # the edge of a background thread: the next save prunes again
        log.warning("answer cache: pruning the change feed failed", exc_info=True)
    finally:
        connections.close_all()  # this thread's connections only


def prune_feed(*, upto: int, saved_at: dt.datetime) -> int:
    """Delete the feed's rows up to seq `upto` (what a save includes) that are older than a day before
    `saved_at`; the newest row is always kept, so that a process that fell behind sees where the feed
    continues and compares the whole bank instead. Returns how many rows were deleted."""
    newest = _feed_newest()
    deleted, _ = (
        BankChange.objects.filter(id__lte=upto, created__lt=saved_at - PRUNE_OLDER_THAN)
        .exclude(id=newest)
        .delete()
    )
    return deleted
