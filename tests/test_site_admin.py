"""The Django admin: an admin manages the topic list and looks after the bank, answers, questions, aliases
and blocks, and looks up runs, live generations, classes and model manifests; students and teachers
cannot open it; its writes go through the services (the answer cache follows them); provenance cannot be
forged from it."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.models import (
    Classroom,
    FollowUp,
    LiveGeneration,
    MatchBlock,
    ModelManifest,
    PrecomputeRun,
    Problem,
    ProblemAlias,
    Question,
    RunItem,
    Solution,
    Topic,
)
from tutor.services import bank
from tutor.services.text import question_key

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = (
    "topic",
    "problem",
    "solution",
    "question",
    "problemalias",
    "matchblock",
    "precomputerun",
    "runitem",
    "livegeneration",
    "modelmanifest",
    "classroom",
    "followup",
)
CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(cast) -> Client:
    cast.admin.is_superuser = True  # as `setup_demo` makes the admin
    cast.admin.save(update_fields=["is_superuser"])
    return client_for(cast.admin)


@pytest.fixture
def one_of_each(cast, make_problem):
    problem = make_problem(
        CHICKENS, reference="12", topic="algebra", solutions=(("verified", "12"),)
    )
    bank.register_topic("algebra")
    question = Question.objects.create(
        user=cast.alice, text=CHICKENS, key=question_key(CHICKENS), outcome="hit"
    )
    bank.accept_alias(text="35 heads, 94 legs: rabbits?", problem=problem, user=cast.teacher)
    bank.block_match(text="How many chickens?", problem=problem, user=cast.bob)
    run = PrecomputeRun.objects.create(status="running", total=1, created_by=cast.admin)
    classroom = Classroom.objects.create(name="7A", teacher=cast.teacher, join_code="ABCD2345")
    classroom.memberships.create(student=cast.alice)
    classroom.assignments.create(problem=problem, assigned_by=cast.teacher)
    return {
        "precomputerun": run,
        "runitem": RunItem.objects.create(run=run, problem=problem),
        "livegeneration": LiveGeneration.objects.create(
            key="text:x", text="<script>alert(1)</script> 35 heads", generated="Wait, " * 2000
        ),
        "modelmanifest": ModelManifest.objects.create(manifest_id="m1", name="tiny", data={}),
        "classroom": classroom,
        "followup": FollowUp.objects.create(
            question=question, user=cast.alice, text="Why <b>12</b>?", reply="Because 94 - 70 = 24."
        ),
        "topic": Topic.objects.get(),
        "problem": problem,
        "solution": problem.solutions.get(),
        "question": question,
        "problemalias": ProblemAlias.objects.get(),
        "matchblock": MatchBlock.objects.get(),
    }


@pytest.mark.parametrize("model", MODELS)
def test_an_admin_opens_each_list_and_each_record(site, admin_client, one_of_each, model):
    listing = admin_client.get(f"/admin/tutor/{model}/")
    assert listing.status_code == 200
    record = admin_client.get(f"/admin/tutor/{model}/{one_of_each[model].pk}/change/")
    assert record.status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_a_search_works_on_each_list(site, admin_client, one_of_each, model):
    assert admin_client.get(f"/admin/tutor/{model}/", {"q": "35"}).status_code == 200


@pytest.mark.parametrize("who", ["alice", "teacher"])
@pytest.mark.parametrize("model", MODELS)
def test_students_and_teachers_cannot_open_the_admin(site, cast, one_of_each, who, model):
    response = client_for(getattr(cast, who)).get(f"/admin/tutor/{model}/")
    assert response.status_code in (302, 403)
    if response.status_code == 302:
        assert "/admin/login/" in response["Location"]


def test_provenance_is_read_only_and_answers_cannot_be_added_here(site, admin_client, one_of_each):
    solution = one_of_each["solution"]
    page = admin_client.get(f"/admin/tutor/solution/{solution.pk}/change/").content.decode()
    assert 'name="status"' in page and 'name="model_name"' not in page
    assert 'name="evidence"' not in page and 'name="manifest_id"' not in page
    assert admin_client.get("/admin/tutor/solution/add/").status_code == 403
    question = one_of_each["question"]
    page = admin_client.get(f"/admin/tutor/question/{question.pk}/change/").content.decode()
    assert 'name="text"' not in page  # students' questions are records


def test_a_rejection_in_the_admin_is_a_review_and_takes_the_answer_out(
    site, cast, admin_client, one_of_each
):
    solution = one_of_each["solution"]
    response = admin_client.post(
        f"/admin/tutor/solution/{solution.pk}/change/",
        {"status": "rejected", "reasoning": "", "answer": solution.answer, "final": "12"},
    )
    assert response.status_code == 302
    solution.refresh_from_db()
    assert solution.status == "rejected" and solution.reviewed_by == cast.admin
    assert one_of_each["problem"].best_solution() is None


def test_the_admin_manages_the_topic_list(site, admin_client, one_of_each, make_problem):
    topic, problem = one_of_each["topic"], one_of_each["problem"]
    # Add: stored normalized; a case variant of an existing topic is refused.
    assert admin_client.post("/admin/tutor/topic/add/", {"name": "  Geometry "}).status_code == 302
    assert Topic.objects.filter(name="geometry").exists()
    again = admin_client.post("/admin/tutor/topic/add/", {"name": "GEOMETRY"})
    assert again.status_code == 200 and "already on the list" in again.content.decode()
    # Rename: the problems follow.
    response = admin_client.post(f"/admin/tutor/topic/{topic.pk}/change/", {"name": "Equations"})
    assert response.status_code == 302
    problem.refresh_from_db()
    assert problem.topic == "equations" and Topic.objects.filter(name="equations").exists()
    # A topic in use cannot be deleted; an unused one can.
    assert admin_client.get(f"/admin/tutor/topic/{topic.pk}/delete/").status_code == 403
    unused = Topic.objects.get(name="geometry")
    assert admin_client.post(f"/admin/tutor/topic/{unused.pk}/delete/", {"post": "yes"}).status_code
    assert not Topic.objects.filter(name="geometry").exists()
    listing = admin_client.get("/admin/tutor/topic/").content.decode()
    assert "equations" in listing


def test_a_problem_edited_in_the_admin_reaches_the_answer_cache(
    site, cast, admin_client, one_of_each, exact_cache
):
    problem = one_of_each["problem"]
    reworded = "鸡兔同笼：35个头，94只脚。兔子几只？"
    response = admin_client.post(
        f"/admin/tutor/problem/{problem.pk}/change/",
        {
            "text": reworded,
            "lang": "zh",
            "topic": "algebra",
            "tags": "[]",
            "difficulty": "",
            "reference_answer": "12",
            "solutions-TOTAL_FORMS": "1",
            "solutions-INITIAL_FORMS": "1",
            "solutions-MIN_NUM_FORMS": "0",
            "solutions-MAX_NUM_FORMS": "0",
            "solutions-0-id": str(one_of_each["solution"].pk),
            "solutions-0-problem": str(problem.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    decision = exact_cache.lookup(reworded)
    assert decision.hit and decision.entry_id == str(problem.pk)
    # Deleting in the admin takes it out of the cache too.
    admin_client.post(f"/admin/tutor/problem/{problem.pk}/delete/", {"post": "yes"})
    assert not Problem.objects.exists() and not exact_cache.lookup(reworded).hit


def test_aliases_and_blocks_deleted_in_the_admin_leave_the_cache(
    site, admin_client, one_of_each, exact_cache
):
    alias, block = one_of_each["problemalias"], one_of_each["matchblock"]
    assert exact_cache.lookup(alias.text).hit
    admin_client.post(f"/admin/tutor/problemalias/{alias.pk}/delete/", {"post": "yes"})
    assert not ProblemAlias.objects.exists() and not exact_cache.lookup(alias.text).hit
    key = question_key(block.text)
    assert (key, str(block.problem_id)) in exact_cache.blocks
    admin_client.post(f"/admin/tutor/matchblock/{block.pk}/delete/", {"post": "yes"})
    assert (
        not MatchBlock.objects.exists() and (key, str(block.problem_id)) not in exact_cache.blocks
    )


def test_a_pending_alias_is_accepted_from_the_admin(site, cast, admin_client, make_problem):
    problem = make_problem(CHICKENS, solutions=(("approved", "12"),))
    pending = ProblemAlias.objects.create(
        text="rabbits, 35 heads?",
        key=question_key("rabbits, 35 heads?"),
        problem=problem,
        status="pending",
        created_by=cast.alice,
    )
    response = admin_client.post(
        "/admin/tutor/problemalias/",
        {"action": "accept_aliases", "_selected_action": [pending.pk]},
    )
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == "accepted"
    assert Solution.objects.count() == 1


def test_records_are_read_only_and_long_text_is_cut_and_escaped(site, admin_client, one_of_each):
    live = one_of_each["livegeneration"]
    page = admin_client.get(f"/admin/tutor/livegeneration/{live.pk}/change/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert page.count("Wait,") < 400  # 2,000 of the 12,000 characters
    assert 'name="text"' not in page and 'name="status"' not in page
    for model in ("livegeneration", "runitem", "modelmanifest", "classroom", "precomputerun"):
        assert admin_client.get(f"/admin/tutor/{model}/add/").status_code == 403
    classroom = one_of_each["classroom"]
    page = admin_client.get(f"/admin/tutor/classroom/{classroom.pk}/change/").content.decode()
    assert "alice" in page and 'name="name"' not in page


def test_a_running_run_is_cancelled_through_the_service_and_not_deleted(
    site, admin_client, one_of_each
):
    run = one_of_each["precomputerun"]
    assert admin_client.get(f"/admin/tutor/precomputerun/{run.pk}/delete/").status_code == 403
    response = admin_client.post(
        "/admin/tutor/precomputerun/", {"action": "cancel_runs", "_selected_action": [run.pk]}
    )
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status in ("cancelling", "cancelled")
    assert run.items.get().status == "cancelled"


def test_the_admin_cannot_forge_an_answers_provenance(site, cast, admin_client, make_problem):
    """Only a review in the admin's own name: no "verified" (that is a check against the reference
    answer), no other reviewer or author, no teacher's edit, no source; an imported answer the admin
    approves is approved by the admin, and still says which pack it came from."""
    problem = make_problem(CHICKENS, reference="12")
    imported = Solution.objects.create(
        problem=problem,
        final="12",
        answer="\\boxed{12}",
        status="unverified",
        source="import",
        evidence={"pack": {"file": "other.sqlite", "claimed_status": "approved"}},
    )
    url = f"/admin/tutor/solution/{imported.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'value="verified"' not in page  # not offered
    assert "from pack other.sqlite (claimed approved)" in page
    forged = {
        "reasoning": "",
        "answer": imported.answer,
        "final": "12",
        "source": "teacher",
        "reviewed_by": str(cast.teacher.pk),
        "created_by": str(cast.teacher.pk),
        "evidence": '{"edited_by_teacher": true}',
        "contradicts_reference": "on",
    }
    refused = admin_client.post(url, {**forged, "status": "verified"})
    assert refused.status_code == 200  # the form refuses a status it does not offer
    imported.refresh_from_db()
    assert (imported.status, imported.reviewed_by, imported.source) == (
        "unverified",
        None,
        "import",
    )
    assert admin_client.post(url, {**forged, "status": "approved"}).status_code == 302
    imported.refresh_from_db()
    assert imported.status == "approved" and imported.reviewed_by == cast.admin
    assert imported.created_by is None and imported.source == "import"
    assert "edited_by_teacher" not in imported.evidence
    assert imported.approver_name == "admin" and imported.from_pack["file"] == "other.sqlite"
    listing = admin_client.get("/admin/tutor/solution/").content.decode()
    assert "approved by admin · from pack other.sqlite" in listing
