from django.contrib import admin
from django.urls import include, path

from tutor.views import api, runs, student, teacher

urlpatterns = [
    path("", student.home, name="home"),
    path("ask", student.ask, name="ask"),
    path("ask/submit", student.ask_submit, name="ask_submit"),
    path("questions/<int:question_id>", student.question_page, name="question"),
    path("questions/<int:question_id>/answer", student.question_answer, name="question_answer"),
    path(
        "questions/<int:question_id>/feedback", student.question_feedback, name="question_feedback"
    ),
    path(
        "questions/<int:question_id>/ask-teacher",
        student.question_ask_teacher,
        name="question_ask_teacher",
    ),
    path("questions/<int:question_id>/choose", student.question_choose, name="question_choose"),
    path("questions/<int:question_id>/stop", student.question_stop, name="question_stop"),
    path("questions/<int:question_id>/retry", student.question_retry, name="question_retry"),
    path("questions/<int:question_id>/link", teacher.question_link, name="question_link"),
    path("aliases/<int:alias_id>/review", teacher.alias_review, name="alias_review"),
    path("signup", student.signup, name="signup"),
    path("bank", teacher.bank, name="bank"),
    path("bank/new", teacher.problem_add, name="problem_add"),
    path("bank/students", teacher.student_questions, name="student_questions"),
    path("bank/<int:problem_id>/promote", teacher.problem_promote, name="problem_promote"),
    path("bank/<int:problem_id>/merge", teacher.problem_merge, name="problem_merge"),
    path("bank/<int:problem_id>/delete", teacher.problem_delete, name="problem_delete"),
    path("bank/<int:problem_id>", teacher.problem_page, name="problem"),
    path("bank/<int:problem_id>/edit", teacher.problem_edit, name="problem_edit"),
    path("solutions/<int:solution_id>/review", teacher.solution_review, name="solution_review"),
    path("solutions/<int:solution_id>/edit", teacher.solution_edit, name="solution_edit"),
    path("missed", teacher.missed, name="missed"),
    path("runs", runs.runs, name="runs"),
    path("runs/<int:run_id>", runs.run_page, name="run"),
    path("runs/<int:run_id>/progress", runs.run_progress, name="run_progress"),
    path("runs/<int:run_id>/cancel", runs.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/resume", runs.run_resume, name="run_resume"),
    path("api/ask", api.ask, name="api_ask"),
    path("api/questions/<int:question_id>", api.question_detail, name="api_question"),
    path("api/questions/<int:question_id>/stream", api.question_stream, name="api_question_stream"),
    path(
        "api/questions/<int:question_id>/feedback",
        api.question_feedback,
        name="api_question_feedback",
    ),
    path("api/questions/<int:question_id>/choose", api.question_choose, name="api_question_choose"),
    path("api/questions/<int:question_id>/stop", api.question_stop, name="api_question_stop"),
    path("api/problems", api.problems, name="api_problems"),
    path("api/openapi.json", api.schema, name="api_schema"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
