from django.contrib import admin
from django.urls import include, path

from tutor import api, run_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("ask", views.ask, name="ask"),
    path("ask/submit", views.ask_submit, name="ask_submit"),
    path("questions/<int:question_id>", views.question_page, name="question"),
    path("questions/<int:question_id>/answer", views.question_answer, name="question_answer"),
    path("questions/<int:question_id>/feedback", views.question_feedback, name="question_feedback"),
    path("signup", views.signup, name="signup"),
    path("bank", views.bank, name="bank"),
    path("bank/new", views.problem_add, name="problem_add"),
    path("bank/<int:problem_id>", views.problem_page, name="problem"),
    path("bank/<int:problem_id>/edit", views.problem_edit, name="problem_edit"),
    path("solutions/<int:solution_id>/review", views.solution_review, name="solution_review"),
    path("solutions/<int:solution_id>/edit", views.solution_edit, name="solution_edit"),
    path("missed", views.missed, name="missed"),
    path("runs", run_views.runs, name="runs"),
    path("runs/<int:run_id>", run_views.run_page, name="run"),
    path("runs/<int:run_id>/progress", run_views.run_progress, name="run_progress"),
    path("runs/<int:run_id>/cancel", run_views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/resume", run_views.run_resume, name="run_resume"),
    path("api/ask", api.ask, name="api_ask"),
    path("api/questions/<int:question_id>", api.question_detail, name="api_question"),
    path("api/questions/<int:question_id>/stream", api.question_stream, name="api_question_stream"),
    path(
        "api/questions/<int:question_id>/feedback",
        api.question_feedback,
        name="api_question_feedback",
    ),
    path("api/problems", api.problems, name="api_problems"),
    path("api/openapi.json", api.schema, name="api_schema"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
