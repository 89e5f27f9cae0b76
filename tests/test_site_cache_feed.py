"""The site's answer cache across processes: the change feed, the saved cache, restarts and damage.

This pytest process is one site process (its real cache, the real USE-multilingual embedder); another
site process is a child Python (`python -m tests.test_site_cache_feed DB`) on the same database file and
the same SUANJING_VAR, driven by JSON lines: it calls the same services and `runtime.lookup`, and counts
what its real embedder embeds (a wrapper around it). A change made in one process must reach the other
within a second; a second start must load the saved cache and embed nothing; a damaged cache folder must
be rebuilt from the vector store and the bank with a log line, never a crash.
The BankChange rows every bank-changing service writes are checked without an embedder (first tests).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine
from tutor.models import BankChange, MatchBlock, Problem, ProblemAlias, Question
from tutor.services import bank, bankcache, runtime

REPO = Path(__file__).resolve().parent.parent
CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
TRAIN = "A train travels 240 km in 3 hours. What is its average speed in km/h?"
SQUARE = "A square has a side of 7 cm. What is its area in square centimetres?"
RECTANGLE = "一个长方形长12厘米，宽5厘米，它的面积是多少平方厘米？"
PERCENT = "What is 15% of 240?"
LADDER = "A ladder 13 m long leans against a wall with its foot 5 m from the wall. How high up the wall does it reach?"
TIMES = "What is 17 times 23?"
TIMES_REWORDED = "What do you get when you multiply 17 by 23?"  # a hit through the embedder
WITHIN_S = 1.0  # a change reaches the other process within a second
# The other site process: Django on this test run's database file, then `child()` below.
CHILD_BOOT = (
    "import sys, django; from django.conf import settings; "
    "settings.DATABASES['default']['NAME'] = sys.argv[1]; django.setup(); "
    "from tests.test_site_cache_feed import child; child()"
)


def rows() -> list[tuple[str, int, str]]:
    return list(BankChange.objects.order_by("id").values_list("kind", "problem_id", "text"))


# -- 1. every write that changes what the cache must know writes its row, in its transaction -------


@pytest.mark.django_db
def test_each_bank_change_writes_its_feed_row(site, cast, make_problem):
    problem = bank.create_problem(text=CHICKENS, lang="zh", reference_answer="12")
    other = bank.create_problem(text=TRAIN, lang="en")
    assert rows() == [("put", problem.pk, CHICKENS), ("put", other.pk, TRAIN)]
    BankChange.objects.all().delete()

    bank.update_problem(problem=problem, topic="cages")  # not the text: nothing the cache holds
    assert rows() == []
    bank.update_problem(problem=problem, text=CHICKENS.replace("35", "36"))
    assert rows() == [("put", problem.pk, CHICKENS.replace("35", "36"))]
    BankChange.objects.all().delete()

    bank.accept_alias(text="笼子里鸡兔共35头94脚，兔几只？", problem=problem, user=cast.teacher)
    block = bank.block_match(text=TRAIN, problem=problem, user=cast.alice)
    bank.lift_block(block=block)
    bank.block_match(text="笼子里鸡兔共35头94脚，兔几只？", problem=problem)
    bank.accept_alias(text="笼子里鸡兔共35头94脚，兔几只？", problem=problem, user=cast.teacher)
    wording = "笼子里鸡兔共35头94脚，兔几只？"
    bank.dismiss_alias(alias=ProblemAlias.objects.get(problem=problem, text=wording))
    assert rows() == [
        ("alias", problem.pk, wording),
        ("block", problem.pk, TRAIN),
        ("unblock", problem.pk, TRAIN),
        ("block", problem.pk, wording),
        ("unblock", problem.pk, wording),  # accepting the wording lifts its block
        ("alias", problem.pk, wording),
        ("unalias", problem.pk, wording),
    ]
    BankChange.objects.all().delete()

    # A deleted problem takes its aliases and blocks with it: the feed says so.
    bank.accept_alias(text=wording, problem=other, user=cast.teacher)
    bank.block_match(text=SQUARE, problem=other)
    BankChange.objects.all().delete()
    other_id = other.pk
    bank.delete_problem(problem=other)
    assert rows() == [
        ("drop", other_id, ""),
        ("unalias", other_id, wording),
        ("unblock", other_id, SQUARE),
    ]
    BankChange.objects.all().delete()

    # Merging a student's question: its wordings become aliases of the banked problem, then it goes.
    student = make_problem(PERCENT, source=Problem.Source.STUDENT)
    student_id = student.pk
    bank.merge_problem(problem=student, into=problem, teacher=cast.teacher)
    assert rows() == [("alias", problem.pk, PERCENT), ("drop", student_id, "")]


@pytest.mark.django_db
def test_a_change_that_rolls_back_leaves_no_feed_row(site):
    with pytest.raises(RuntimeError), transaction.atomic():
        bank.create_problem(text=CHICKENS, lang="zh")
        raise RuntimeError("the request failed after the write")
    assert not Problem.objects.exists() and rows() == []


@pytest.mark.django_db
def test_the_fixture_bank_writes_one_row_per_new_problem(site, tmp_path):
    from django.core.management import call_command

    lines = [
        {"id": "feed-1", "text": CHICKENS, "reference_answer": "12"},
        {"id": "feed-2", "text": TRAIN, "reference_answer": "80"},
    ]
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines))
    call_command("load_bank", str(path), stdout=io.StringIO())
    ids = dict(Problem.objects.values_list("fixture_id", "pk"))
    assert rows() == [("put", ids["feed-1"], CHICKENS), ("put", ids["feed-2"], TRAIN)]
    call_command("load_bank", str(path), stdout=io.StringIO())  # loading twice: no new rows
    assert len(rows()) == 2


@pytest.mark.django_db(transaction=True)
def test_a_live_result_that_creates_a_problem_writes_its_row(site, cast):
    from django.test import Client

    runtime.use_engine(
        ScriptedEngine(["<think>\n", "Add.", "</think>\n\n", "So \\boxed{7}"]), FakeManifest()
    )
    client = Client()
    client.force_login(cast.alice)
    response = client.post(
        "/api/ask", data=json.dumps({"question": "What is 3 + 4?"}), content_type="application/json"
    )
    assert response.status_code == 202
    b"".join(client.get(f"/api/questions/{response.json()['id']}/stream").streaming_content)
    deadline = time.monotonic() + 30
    while not Problem.objects.filter(text="What is 3 + 4?").exists():
        assert time.monotonic() < deadline, "the live result was not stored"
        time.sleep(0.05)
    problem = Problem.objects.get(text="What is 3 + 4?")
    assert rows() == [("put", problem.pk, "What is 3 + 4?")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "age_days, seq, newest, pruned",
    [
        (3, "included", False, True),  # saved, and older than a day before the save: pruned
        (0.5, "included", False, False),  # saved, but younger than a day before the save: kept
        (3, "after the save", False, False),  # not in the save: kept
        (3, "included", True, False),  # the newest row is always kept
    ],
)
def test_the_feed_is_pruned_only_behind_a_save_and_a_day(age_days, seq, newest, pruned):
    row = BankChange.objects.create(kind="put", problem_id=1, text="x")
    if not newest:
        BankChange.objects.create(kind="put", problem_id=2, text="y")
    BankChange.objects.filter(pk=row.pk).update(
        created=timezone.now() - dt.timedelta(days=age_days)
    )
    upto = row.pk if seq == "included" else row.pk - 1
    deleted = bankcache.prune_feed(upto=upto, saved_at=timezone.now())
    assert deleted == int(pruned)
    assert BankChange.objects.filter(pk=row.pk).exists() is not pruned


# -- the real cache in this process, and another site process -------------------------------------


@pytest.fixture(scope="module")
def embedder():
    """The site's default embedder (USE-multilingual), loaded once for the module."""
    from solver.embed import load_embedder

    return load_embedder("use-multilingual")


class Counting:
    """The real embedder, recording every text it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts.extend(texts)
        return self.inner.embed(texts)

    def bank_texts(self) -> list[str]:
        """What was embedded, apart from the warm-up text after a start."""
        return [t for t in self.texts if t != bankcache.WARM_UP_TEXT]


@pytest.fixture
def real_site(embedder, monkeypatch, settings, tmp_path):
    """This process's runtime with the real cache (the real embedder, counted), a fresh SUANJING_VAR,
    and no model (a miss is refused at once)."""
    import solver.embed

    counting = Counting(embedder)
    monkeypatch.setattr(solver.embed, "load_embedder", lambda name, **kwargs: counting)
    settings.SUANJING_EMBEDDER = "use-multilingual"
    settings.SUANJING_CACHE_THRESHOLD = ""
    settings.SUANJING_MODELS = str(tmp_path / "no-models")
    settings.VAR_DIR = tmp_path / "var"
    runtime.reset()
    yield counting
    runtime.reset()


def folder_of(var: Path) -> Path:
    return bankcache.cache_folder(var, "use-multilingual")


def wait_saved(var: Path, *, at_least: int | None = None, timeout: float = 120.0) -> int:
    """Wait until the saved cache in `var` exists (at feed seq `at_least` or later); its seq."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        position = bankcache.saved_position(folder_of(var))
        if position is not None and (at_least is None or position >= at_least):
            return position
        time.sleep(0.1)
    raise AssertionError(f"no saved cache in {folder_of(var)} after {timeout} s")


def until(text: str, *, hit: str | None = None, not_on: str | None = None, within: float) -> float:
    """Look `text` up in this process until it is a hit on `hit` (or no hit on `not_on`); seconds."""
    started = time.monotonic()
    while True:
        decision = runtime.lookup(text)
        on = decision.entry_id if decision is not None and decision.hit else None
        if (hit is not None and on == hit) or (not_on is not None and on != not_on):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{text!r} -> {decision!r} after {within} s")
        time.sleep(0.02)


class SiteProcess:
    """Another site process on the same database and SUANJING_VAR (see `child` below)."""

    def __init__(self, var: Path, log: Path) -> None:
        env = {
            **os.environ,
            "SUANJING_VAR": str(var),
            "SUANJING_MODELS": str(var / "no-models"),
            "DJANGO_SETTINGS_MODULE": "tutor.settings",
            "LOG_LEVEL": "INFO",
        }
        env.pop("SUANJING_CACHE_THRESHOLD", None)
        env.pop("SUANJING_EMBEDDER", None)
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD_BOOT, connection.settings_dict["NAME"]],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            text=True,
        )

    def call(self, op: str, **args) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"op": op, **args}, ensure_ascii=False) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the site process ended:\n{self.log.read_text()[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"{op}: {answer['error']}\n{self.log.read_text()[-3000:]}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def other_process(real_site, settings, tmp_path):
    processes: list[SiteProcess] = []

    def start() -> SiteProcess:
        process = SiteProcess(Path(settings.VAR_DIR), tmp_path / f"site-{len(processes)}.log")
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.close()


# -- 2. changes cross processes within a second ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_problem_added_in_another_process_is_a_hit_here_within_a_second(
    real_site, other_process, cast
):
    from django.test import Client

    bank.create_problem(text=CHICKENS, lang="zh", reference_answer="12")
    assert len(runtime.get_cache()) == 1  # this process's cache is up
    other = other_process()
    created = other.call("create", text=TIMES, reference="391")["id"]
    assert until(TIMES, hit=str(created), within=WITHIN_S) < WITHIN_S
    assert until(TIMES_REWORDED, hit=str(created), within=WITHIN_S) < WITHIN_S
    client = Client()
    client.force_login(cast.alice)
    answer = client.post(
        "/api/ask", data=json.dumps({"question": TIMES_REWORDED}), content_type="application/json"
    ).json()
    assert answer["status"] == "hit" and answer["match"]["problem_id"] == created
    # ...and the other way: a problem added here is a hit there.
    other.call("start")
    mine = bank.create_problem(text=TRAIN, lang="en", reference_answer="80")
    assert other.call("until", text=TRAIN, hit=str(mine.pk), within=WITHIN_S)["ok"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_deleted_or_edited_problem_stops_hitting_in_the_other_process(real_site, other_process):
    square = bank.create_problem(text=SQUARE, lang="en", reference_answer="49")
    train = bank.create_problem(text=TRAIN, lang="en", reference_answer="80")
    other = other_process()
    assert other.call("start")["problems"] == 2
    assert other.call("until", text=SQUARE, hit=str(square.pk), within=WITHIN_S)["ok"]
    bank.delete_problem(problem=square)
    assert other.call("until", text=SQUARE, not_on=str(square.pk), within=WITHIN_S)["ok"]
    edited = TRAIN.replace("240", "300")
    bank.update_problem(problem=train, text=edited)
    assert other.call("until", text=edited, hit=str(train.pk), within=WITHIN_S)["ok"]
    assert other.call("until", text=TRAIN, not_on=str(train.pk), within=WITHIN_S)["ok"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_aliases_and_blocks_cross_processes(real_site, other_process, cast):
    cage = bank.create_problem(text=CHICKENS, lang="zh", reference_answer="12")
    bank.create_problem(text=RECTANGLE, lang="zh", reference_answer="60")
    other = other_process()
    other.call("start")
    # A wording of the cage problem that the cache does not serve by itself (which ones it serves moves
    # with each refit of the decision rule: the first of these became a hit in stop 17's refit).
    candidates = (
        "我家笼子里的小动物们一共有三十五个脑袋九十四条腿，其中兔子是几只呀",
        "35个头94只脚那道题，长耳朵的有几只",
        "老师，笼子那题：三十五、九十四，问蹦蹦跳跳的那种有几只",
    )
    lookups = {text: other.call("lookup", text=text) for text in candidates}
    unserved = [
        text
        for text, before in lookups.items()
        if not (before["hit"] and before["entry_id"] == str(cage.pk))
    ]
    assert unserved, lookups
    wording = unserved[0]
    alias = bank.accept_alias(text=wording, problem=cage, user=cast.teacher)
    assert other.call("until", text=wording, hit=str(cage.pk), within=WITHIN_S)["ok"]
    bank.dismiss_alias(alias=alias)
    assert other.call("until", text=wording, not_on=str(cage.pk), within=WITHIN_S)["ok"]
    assert other.call("until", text=CHICKENS, hit=str(cage.pk), within=WITHIN_S)["ok"]
    block = bank.block_match(text=CHICKENS, problem=cage, user=cast.alice)
    assert other.call("until", text=CHICKENS, not_on=str(cage.pk), within=WITHIN_S)["ok"]
    bank.lift_block(block=MatchBlock.objects.get(pk=block.pk))
    assert other.call("until", text=CHICKENS, hit=str(cage.pk), within=WITHIN_S)["ok"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pack_imported_while_the_site_runs_is_a_word_for_word_hit(
    real_site, other_process, cast, tmp_path
):
    from django.test import Client

    from solver import packs
    from tutor.models import LiveGeneration

    bank.create_problem(text=CHICKENS, lang="zh", reference_answer="12")
    assert len(runtime.get_cache()) == 1
    path = tmp_path / "pack.sqlite"
    with packs.PackWriter(path) as writer:
        writer.add_manifest(packs.PackManifest("lab-pc", {"name": "deepseek-r1-distill-qwen-1.5b"}))
        writer.add_problem(packs.PackProblem("lab-1", LADDER, "12", "en", "geometry"))
        writer.add_solution(
            packs.PackSolution(
                id="s-lab-1",
                problem_id="lab-1",
                manifest_id="lab-pc",
                prompt_version="r1-distill/1",
                status="verified",
                final="12",
                reasoning="13^2 - 5^2 = 144",
                answer_text="\\boxed{12}",
                evidence={"samples": [], "k": 1, "agreement": 1.0, "reference": "12"},
                new_tokens=50,
                elapsed_s=1.0,
                created=packs.now_iso(),
            )
        )
    other_process().call(
        "import_pack", path=str(path)
    )  # `manage.py import_pack` on the same machine
    imported = Problem.objects.get(text=LADDER)
    assert until(LADDER, hit=str(imported.pk), within=WITHIN_S) < WITHIN_S
    client = Client()
    client.force_login(cast.alice)
    answer = client.post(
        "/api/ask", data=json.dumps({"question": LADDER}), content_type="application/json"
    ).json()
    assert answer["status"] == "hit" and answer["match"]["problem_id"] == imported.pk
    # Its two steps come one at a time (issue 12): the whole answer when asked for.
    whole = client.get(f"/api/questions/{answer['id']}?reveal=solution").json()
    assert whole["answer"]["final"] == "12"
    assert Problem.objects.filter(text=LADDER).count() == 1  # no duplicate
    assert not LiveGeneration.objects.exists()  # no live generation
    assert Question.objects.get().outcome == Question.Outcome.HIT


# -- 3. starting: the saved cache, a damaged one, and asks during a start --------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_start_loads_the_saved_cache_and_embeds_nothing(
    real_site, other_process, settings
):
    var = Path(settings.VAR_DIR)
    ids = {
        text: str(bank.create_problem(text=text, lang="en", reference_answer="1").pk)
        for text in (CHICKENS, TRAIN, SQUARE, RECTANGLE)
    }
    first = other_process()
    started = first.call("start")
    assert (started["problems"], started["loaded"]) == (4, False)
    assert len(started["embedded"]) == 4  # the very first start embeds the bank
    wait_saved(var)
    first.close()
    for suffix in (
        "",
        "-wal",
        "-shm",
    ):  # no vector store: only the saved cache can spare the embedder
        (var / f"vectors.sqlite{suffix}").unlink(missing_ok=True)

    second = other_process()
    started = second.call("start")
    assert (started["problems"], started["loaded"], started["embedded"]) == (4, True, [])
    for text, entry in ids.items():
        assert second.call("until", text=text, hit=entry, within=WITHIN_S)["ok"]
    assert second.call("embedded")["texts"] == []  # word for word: the exact tier, no embedder
    second.close()

    # A problem added while no process ran: the next start embeds that one text, nothing else.
    added = bank.create_problem(text=TIMES, lang="en", reference_answer="391")
    third = other_process()
    started = third.call("start")
    assert (started["problems"], started["loaded"], len(started["embedded"])) == (5, True, 1)
    assert third.call("until", text=TIMES_REWORDED, hit=str(added.pk), within=WITHIN_S)["ok"]


def damage(folder: Path, how: str) -> None:
    generation = folder / (folder / "CURRENT").read_text().strip()
    if how == "vectors":
        (generation / "vectors.npy").write_bytes(b"\x93NUMPY not really" * 10)
    elif how == "entries":
        text = (generation / "entries.json").read_text()
        (generation / "entries.json").write_text(text[: len(text) // 2])
    elif how == "manifest":
        (generation / "manifest.json").unlink()
    elif how == "current":
        (folder / "CURRENT").write_text("gen-what-is-this\n")
    elif how == "generation":
        for child in generation.iterdir():
            child.unlink()
        generation.rmdir()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["vectors", "entries", "manifest", "current", "generation"])
def test_a_damaged_cache_folder_is_rebuilt_from_the_store_and_the_bank(
    real_site, settings, caplog, how
):
    var = Path(settings.VAR_DIR)
    ids = {
        text: str(bank.create_problem(text=text, lang="en", reference_answer="1").pk)
        for text in (CHICKENS, TRAIN, SQUARE)
    }
    runtime.get_cache()
    wait_saved(var)
    damage(folder_of(var), how)
    runtime.use_cache(None)  # a restart
    real_site.texts.clear()
    with caplog.at_level(logging.WARNING, logger="tutor.services.bankcache"):
        cache = runtime.get_cache()
    assert len(cache) == 3
    started = bankcache.last_start()
    assert not started.loaded and started.reason
    assert real_site.bank_texts() == []  # every vector came from the store
    assert any(
        "cannot be used" in r.getMessage() or "failed unexpectedly" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    for text, entry in ids.items():
        assert until(text, hit=entry, within=WITHIN_S) < WITHIN_S
    # The rebuilt cache is saved again, and the next start loads it.
    deadline = time.monotonic() + 60
    while bankcache.saved_position(folder_of(var)) is None or not _loads(var, real_site):
        assert time.monotonic() < deadline, "the rebuilt cache was not saved"
        time.sleep(0.2)


def _loads(var: Path, embedder) -> bool:
    from solver.cache import CacheFileError, SemanticCache

    try:
        return len(SemanticCache.load(folder_of(var), embedder)) == 3
    except CacheFileError:
        return False


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_asks_during_a_slow_start_are_misses_not_errors(real_site, monkeypatch, cast):
    from django.test import Client

    import solver.embed

    gate = threading.Event()

    def slow_loader(name, **kwargs):
        gate.wait(60)  # an embedder that takes its time to load (the real one, once let through)
        return real_site

    monkeypatch.setattr(solver.embed, "load_embedder", slow_loader)
    monkeypatch.setattr(bankcache, "ASK_WAIT_S", 0.5)
    problem = bank.create_problem(text=TRAIN, lang="en", reference_answer="80")
    asked = time.monotonic()
    assert runtime.lookup(TRAIN) is None  # not ready: a miss
    assert time.monotonic() - asked < 5
    client = Client()
    client.force_login(cast.alice)
    response = client.post(
        "/api/ask", data=json.dumps({"question": TRAIN}), content_type="application/json"
    )
    assert response.status_code != 500 and response.json()["status"] != "hit"
    gate.set()
    assert until(TRAIN, hit=str(problem.pk), within=30) < 30


# -- 4. a process that fell behind ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_process_behind_a_pruned_feed_compares_the_whole_bank(real_site, other_process, caplog):
    kept = bank.create_problem(text=CHICKENS, lang="zh", reference_answer="12")
    doomed = bank.create_problem(text=SQUARE, lang="en", reference_answer="49")
    assert len(runtime.get_cache()) == 2  # this process is at the feed's end now...
    other = other_process()  # ...and falls behind while another process changes the bank:
    added = other.call("create", text=LADDER, reference="12")["id"]
    other.call("delete", id=doomed.pk)
    last = other.call("create", text=TRAIN, reference="80")["id"]
    # A save days ago included every row up to the deletion; they are pruned. The newest row stays.
    upto = list(BankChange.objects.order_by("id").values_list("id", flat=True))[-2]
    BankChange.objects.filter(id__lte=upto).update(created=timezone.now() - dt.timedelta(days=3))
    assert bankcache.prune_feed(upto=upto, saved_at=timezone.now()) == 4
    with caplog.at_level(logging.WARNING, logger="tutor.services.bankcache"):
        assert until(LADDER, hit=str(added), within=5) < 5
    assert any("does not continue" in r.getMessage() for r in caplog.records)
    until(SQUARE, not_on=str(doomed.pk), within=WITHIN_S)
    until(TRAIN, hit=str(last), within=WITHIN_S)
    until(CHICKENS, hit=str(kept.pk), within=WITHIN_S)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_seq_that_becomes_visible_late_is_still_applied(real_site):
    """PostgreSQL can commit seq N+1 before N: the skipped N is asked for again until it shows up
    (made here on SQLite by writing the rows with explicit ids, the later one first)."""
    bank.create_problem(text=CHICKENS, lang="zh", reference_answer="12")
    runtime.get_cache()
    until(CHICKENS, not_on="nothing", within=WITHIN_S)  # one poll: at the feed's end
    top = BankChange.objects.order_by("-id").first().pk
    late = Problem.objects.create(text=LADDER, lang="en", reference_answer="12")
    early = Problem.objects.create(text=TRAIN, lang="en", reference_answer="80")
    BankChange.objects.create(id=top + 2, kind="put", problem_id=early.pk, text=TRAIN)
    until(TRAIN, hit=str(early.pk), within=10)  # (the time it takes is the other tests' business)
    assert bankcache._this_process().followed.gaps.keys() == {top + 1}
    BankChange.objects.create(id=top + 1, kind="put", problem_id=late.pk, text=LADDER)
    until(LADDER, hit=str(late.pk), within=10)
    assert not bankcache._this_process().followed.gaps


# -- the other site process ------------------------------------------------------------------------


def child() -> None:
    """A site process (started by CHILD_BOOT): JSON commands on stdin, one answer line each on
    stdout. Its embedder is the real one, wrapped to record what it embeds."""
    import solver.embed

    real_load = solver.embed.load_embedder
    embedded: list[str] = []

    class Recording:
        def __init__(self, inner) -> None:
            self.inner, self.name, self.dim = inner, inner.name, inner.dim

        def embed(self, texts):
            embedded.extend(t for t in texts if t != bankcache.WARM_UP_TEXT)
            return self.inner.embed(texts)

    solver.embed.load_embedder = lambda name, **kwargs: Recording(real_load(name, **kwargs))

    def hit_on(text: str) -> tuple[bool, str | None]:
        decision = runtime.lookup(text)
        return (decision is not None and decision.hit), (
            decision.entry_id if decision is not None else None
        )

    def handle(cmd: dict) -> dict:
        op = cmd["op"]
        if op == "start":
            before = len(embedded)
            cache = runtime.get_cache()
            info = bankcache.last_start()
            return {
                "problems": len(cache),
                "loaded": info.loaded,
                "reason": info.reason,
                "embedded": embedded[before:],
            }
        if op == "lookup":
            hit, entry = hit_on(cmd["text"])
            return {"hit": hit, "entry_id": entry}
        if op == "until":
            started = time.monotonic()
            while True:
                hit, entry = hit_on(cmd["text"])
                on = entry if hit else None
                if ("hit" in cmd and on == cmd["hit"]) or ("not_on" in cmd and on != cmd["not_on"]):
                    return {"ok": True, "seconds": time.monotonic() - started}
                if time.monotonic() - started > cmd["within"]:
                    return {"ok": False, "last": [hit, entry]}
                time.sleep(0.02)
        if op == "create":
            problem = bank.create_problem(
                text=cmd["text"], lang="en", reference_answer=cmd.get("reference", "")
            )
            return {"id": problem.pk}
        if op == "delete":
            bank.delete_problem(problem=Problem.objects.get(pk=cmd["id"]))
            return {}
        if op == "import_pack":
            from django.core.management import call_command

            call_command("import_pack", cmd["path"], stdout=io.StringIO())
            return {}
        if op == "embedded":
            return {"texts": list(embedded)}
        raise ValueError(f"unknown op {op!r}")

    for line in sys.stdin:
        try:
            answer = handle(json.loads(line))
        except Exception as exc:  # reported to the test, which fails with it
            import traceback

            answer = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
        sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
        sys.stdout.flush()
