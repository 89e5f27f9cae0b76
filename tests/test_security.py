"""Issue 13's accounts and headers: password rules, sign-up throttling and code, login lockout (axes),
sessions and cookies, API token expiry and revocation, the Content-Security-Policy and `check --deploy`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from tests.site_fixtures import *  # noqa: F403

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    """Dozens of sign-ins per test: a fast hasher (the validators and axes do not depend on it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _signup(client: Client, username: str, password: str, ip: str = "10.9.8.7", **extra):
    return client.post(
        "/signup",
        {"username": username, "password1": password, "password2": password, **extra},
        REMOTE_ADDR=ip,
    )


# -- passwords -----------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["x", "1", "12345678", "password", "carol-signup", "short7!"])
def test_signup_refuses_weak_passwords(password):
    response = _signup(Client(), "carol-signup", password)
    assert response.status_code == 200  # the form again, with the rule it broke
    assert not User.objects.filter(username="carol-signup").exists()
    assert b"errorlist" in response.content


@pytest.mark.django_db
def test_signup_accepts_a_good_password_and_signs_in():
    response = _signup(Client(), "carol", "quiet-river-93")
    assert response.status_code == 302
    assert User.objects.get(username="carol").groups.filter(name="student").exists()


@pytest.mark.django_db
def test_password_change_applies_the_rules(cast):
    client = Client()
    client.force_login(cast.alice)
    weak = client.post(
        "/accounts/password_change/",
        {"old_password": "pw-alice", "new_password1": "alice", "new_password2": "alice"},
    )
    assert weak.status_code == 200 and b"errorlist" in weak.content
    strong = client.post(
        "/accounts/password_change/",
        {
            "old_password": "pw-alice",
            "new_password1": "m0ss-lantern",
            "new_password2": "m0ss-lantern",
        },
    )
    assert strong.status_code == 302
    cast.alice.refresh_from_db()
    assert cast.alice.check_password("m0ss-lantern")


@pytest.mark.django_db
def test_admin_user_creation_applies_the_rules(cast):
    cast.admin.is_superuser = True
    cast.admin.save()
    client = Client()
    client.force_login(cast.admin)
    weak = client.post(
        "/admin/auth/user/add/",
        {"username": "dora", "password1": "123", "password2": "123", "usable_password": "true"},
    )
    assert weak.status_code == 200 and not User.objects.filter(username="dora").exists()
    strong = client.post(
        "/admin/auth/user/add/",
        {
            "username": "dora",
            "password1": "amber-kettle-41",
            "password2": "amber-kettle-41",
            "usable_password": "true",
        },
    )
    assert strong.status_code == 302 and User.objects.filter(username="dora").exists()


@pytest.mark.django_db(transaction=True)
def test_setup_demo_passwords_pass_the_rules(settings):
    from django.contrib.auth.password_validation import validate_password

    settings.DEBUG = True
    out = io.StringIO()
    call_command("setup_demo", stdout=out)
    lines = [line.split() for line in out.getvalue().splitlines() if " password " in line]
    assert lines, out.getvalue()
    for words in lines:
        username, password = words[words.index("username") + 1], words[words.index("password") + 1]
        validate_password(password, User.objects.get(username=username))  # raises if weak


# -- sign-up throttle and code -------------------------------------------------------------------------


@pytest.mark.django_db
def test_signup_is_throttled_per_client_ip(settings):
    settings.SUANJING_SIGNUPS_PER_HOUR = 5
    for n in range(5):
        assert _signup(Client(), f"kid{n}", "quiet-river-93").status_code == 302
    refused = _signup(Client(), "kid5", "quiet-river-93")
    assert refused.status_code == 429
    assert "Too many accounts" in refused.content.decode() and "太多" in refused.content.decode()
    assert not User.objects.filter(username="kid5").exists()
    other = _signup(Client(), "kid6", "quiet-river-93", ip="10.9.8.8")
    assert other.status_code == 302  # another computer is not held back


@pytest.mark.django_db
def test_signup_throttle_behind_a_proxy_counts_the_forwarded_address(settings):
    settings.SUANJING_SIGNUPS_PER_HOUR = 1
    settings.SUANJING_PROXY_COUNT = 1

    def via_proxy(username, client_ip, spoofed=""):
        forwarded = f"{spoofed}, {client_ip}" if spoofed else client_ip
        return Client().post(
            "/signup",
            {"username": username, "password1": "quiet-river-93", "password2": "quiet-river-93"},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=forwarded,
        )

    assert via_proxy("p1", "203.0.113.5").status_code == 302
    # a client that puts a made-up address in front is still counted by the proxy's own entry
    assert via_proxy("p2", "203.0.113.5", spoofed="198.51.100.1").status_code == 429
    assert via_proxy("p3", "203.0.113.6").status_code == 302


@pytest.mark.django_db
def test_signup_code_when_set(settings):
    settings.SUANJING_SIGNUP_CODE = "maple-7"
    page = Client().get("/signup")
    assert b'name="code"' in page.content
    assert _signup(Client(), "e1", "quiet-river-93").status_code == 200
    assert _signup(Client(), "e2", "quiet-river-93", code="wrong").status_code == 200
    assert not User.objects.filter(username__in=["e1", "e2"]).exists()
    assert _signup(Client(), "e3", "quiet-river-93", code="maple-7").status_code == 302
    settings.SUANJING_SIGNUP_CODE = ""
    assert b'name="code"' not in Client().get("/signup").content


# -- login lockout (django-axes) -----------------------------------------------------------------------


def _login(client: Client, username: str, password: str, ip: str = "10.1.1.1"):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip
    )


@pytest.mark.django_db
def test_ten_wrong_passwords_lock_the_username_and_address_for_15_minutes(cast):
    client = Client()
    for _ in range(9):
        assert _login(client, "alice", "wrong").status_code == 200
    locked = _login(client, "alice", "wrong")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "locked for 15 minutes" in page and "锁定 15 分钟" in page and 'name="password"' in page
    # even the right password is refused while locked, from that address
    assert _login(Client(), "alice", "pw-alice").status_code == 429
    # another address, or another username from the same address, is not locked
    assert _login(Client(), "alice", "pw-alice", ip="10.1.1.2").status_code == 302
    assert _login(Client(), "bob", "pw-bob").status_code == 302
    # the admin's login is covered by the same lockout
    assert (
        Client()
        .post(
            "/admin/login/", {"username": "alice", "password": "pw-alice"}, REMOTE_ADDR="10.1.1.1"
        )
        .status_code
        == 429
    )


@pytest.mark.django_db
def test_lockout_ends_after_the_cool_off(cast, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt
    from django.utils import timezone

    for _ in range(10):
        _login(Client(), "alice", "wrong")
    assert _login(Client(), "alice", "pw-alice").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _login(Client(), "alice", "pw-alice").status_code == 302


@pytest.mark.django_db
def test_a_right_password_resets_the_count(cast):
    for _ in range(9):
        _login(Client(), "alice", "wrong")
    assert _login(Client(), "alice", "pw-alice").status_code == 302
    for _ in range(9):
        assert _login(Client(), "alice", "wrong").status_code == 200  # counting from 0 again


@pytest.mark.django_db
def test_bearer_token_guessing_is_throttled_per_address(cast, settings):
    from tutor.services import tokens

    settings.SUANJING_TOKEN_FAILURES = 5
    good = tokens.issue_api_token(user=cast.alice)
    client = Client()
    for n in range(5):
        r = client.get(
            "/api/questions/1", HTTP_AUTHORIZATION=f"Bearer sj_guess{n}", REMOTE_ADDR="10.2.2.2"
        )
        assert r.status_code == 401
    r = client.get("/api/questions/1", HTTP_AUTHORIZATION=f"Bearer {good}", REMOTE_ADDR="10.2.2.2")
    assert r.status_code == 429 and "too many wrong tokens" in r.json()["error"]
    assert r["Retry-After"]
    # another address with the right token still gets through (404: no such question, but signed in)
    r = client.get("/api/questions/1", HTTP_AUTHORIZATION=f"Bearer {good}", REMOTE_ADDR="10.2.2.3")
    assert r.status_code == 404


# -- sessions and cookies ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sign_in_lasts_8_hours_and_ends_with_the_browser(cast, settings):
    assert settings.SESSION_COOKIE_AGE == 8 * 3600 and settings.SESSION_EXPIRE_AT_BROWSER_CLOSE
    client = Client()
    response = _login(client, "alice", "pw-alice")
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["max-age"] == "" and cookie["expires"] == ""  # a browser-session cookie
    assert client.session.get_expiry_age() == 8 * 3600
    assert not cookie["secure"]  # plain HTTP in development


def _settings_in(env: dict, *names: str) -> list[str]:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='tutor.settings'; django.setup(); "
        "from django.conf import settings as s; "
        f"print(*[repr(getattr(s, n, None)) for n in {list(names)!r}], sep='\\n')"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUANJING_HTTPS", "DEBUG"))}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.split("\n")[: len(names)]


def test_https_setting_turns_on_secure_cookies_redirect_and_hsts():
    names = (
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER",
    )
    on = _settings_in(
        {
            "DEBUG": "False",
            "SUANJING_HTTPS": "1",
            "SUANJING_PROXY_COUNT": "1",
            "SUANJING_HSTS_SECONDS": "600",
        },
        *names,
    )
    assert on == ["True", "True", "True", "600", "('HTTP_X_FORWARDED_PROTO', 'https')"]
    off = _settings_in({"DEBUG": "False", "SUANJING_PROXY_COUNT": "0"}, *names)
    assert off == ["False", "False", "False", "0", "None"]


# -- API tokens: expiry and revocation -----------------------------------------------------------------


@pytest.mark.django_db
def test_tokens_expire_after_the_setting_and_are_refused_with_a_reason(cast, settings):
    from datetime import timedelta

    from django.utils import timezone

    from tutor.models import ApiToken
    from tutor.services import tokens

    settings.SUANJING_TOKEN_DAYS = 30
    token = tokens.issue_api_token(user=cast.alice)
    row = ApiToken.objects.get(user=cast.alice)
    assert timedelta(days=29, hours=23) < row.expires - timezone.now() <= timedelta(days=30)
    ok = Client().get("/api/questions/999", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 404  # signed in: no such question
    ApiToken.objects.filter(pk=row.pk).update(expires=timezone.now() - timedelta(seconds=1))
    expired = Client().get("/api/questions/999", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    assert expired["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_admin_lists_and_revokes_tokens(cast):
    from tutor.models import ApiToken
    from tutor.services import tokens

    token = tokens.issue_api_token(user=cast.alice)
    other = tokens.issue_api_token(user=cast.bob)
    cast.admin.is_superuser = True
    cast.admin.save()
    client = Client()
    client.force_login(cast.admin)
    page = client.get("/admin/tutor/apitoken/").content.decode()
    for column in ("Prefix", "User", "Created", "Last used", "Expires", "Revoked"):
        assert column in page
    assert token[3:9] in page and "Revoke selected tokens" in page
    row = ApiToken.objects.get(user=cast.alice)
    done = client.post(
        "/admin/tutor/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [row.pk], "index": 0},
    )
    assert done.status_code == 302
    row.refresh_from_db()
    assert row.revoked is not None
    refused = Client().get("/api/questions/1", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]
    assert Client().get("/api/questions/1", HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 404
    # a teacher (no admin rights) cannot revoke
    teacher = Client()
    teacher.force_login(cast.teacher)
    assert teacher.get("/admin/tutor/apitoken/").status_code == 302


@pytest.mark.django_db
def test_api_token_command_issues_with_days_and_revokes(cast):
    from tutor.models import ApiToken

    out = io.StringIO()
    call_command("api_token", "alice", "--days", "0", stdout=out)
    assert ApiToken.objects.get(user=cast.alice).expires is None
    call_command("api_token", "alice", stdout=io.StringIO())
    out = io.StringIO()
    call_command("api_token", "alice", "--revoke", stdout=out)
    assert "2 tokens of alice revoked" in out.getvalue()
    assert not ApiToken.objects.filter(user=cast.alice, revoked__isnull=True).exists()


# -- Content-Security-Policy and the other headers -----------------------------------------------------

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@pytest.mark.django_db
def test_every_response_has_the_csp_and_the_other_headers(cast):
    from tests.site_fixtures import bearer
    from tutor.services import tokens

    client = Client()
    client.force_login(cast.teacher)
    token = tokens.issue_api_token(user=cast.alice)
    for response in (
        Client().get("/"),
        Client().get("/accounts/login/"),
        client.get("/bank"),
        Client().get("/api/openapi.json"),
        Client().get("/api/questions/1", **bearer(token)),
        Client().get("/static/tutor/site.css"),
        Client().get("/no-such-page"),
    ):
        assert response["Content-Security-Policy"] == CSP, response
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"


def test_templates_have_no_inline_script_handler_or_style():
    import re

    found = []
    for path in sorted((REPO / "tutor" / "templates").rglob("*.html")):
        source = path.read_text()
        for pattern in (
            r"<script(?![^>]*\bsrc=)[^>]*>",
            r"\son[a-z]+\s*=",
            r"\sstyle\s*=",
            r"<style",
        ):
            found += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, source, re.I)]
        found += [f"{path.name}: javascript:" for _ in re.finditer("javascript:", source, re.I)]
    assert found == []


@pytest.fixture
def csp_browser(monkeypatch):
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


VIOLATIONS_JS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", e =>
  window.__csp.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sample || "")));
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_pages_pass_the_csp_in_a_real_browser(
    csp_browser, live_server, site, cast, make_problem
):
    """Chromium opens the main pages (a streamed live answer, the bank, a problem, missed questions,
    runs and an active run, the admin) and reports no CSP violation, by event or console message."""
    from tests.site_fixtures import FakeManifest, ScriptedEngine
    from tests.test_browser import GOOD
    from tutor.models import PrecomputeRun
    from tutor.services import runtime

    problem = make_problem("一个数的3倍是36，这个数是多少？")
    run = PrecomputeRun.objects.create(status="running", total=3, created_by=cast.teacher)
    cast.teacher.is_staff = cast.teacher.is_superuser = True
    cast.teacher.save()
    reports: list[str] = []

    def page_for(username: str):
        page = csp_browser.new_context().new_page()
        page.add_init_script(VIOLATIONS_JS)
        page.on(
            "console",
            lambda m: reports.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(live_server.url + "/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", "pw-" + username)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/$"))
        return page

    def check(page, what: str) -> None:
        page.wait_for_load_state("load")
        reports.extend(f"{what}: {v}" for v in page.evaluate("window.__csp"))

    import re

    student = page_for("alice")
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    student.goto(live_server.url + "/ask")
    student.fill("#question", "一个数的5倍是45，这个数是多少？")
    student.click("#ask-button")
    student.wait_for_selector(".answer-block[data-outcome=generated]", timeout=20_000)
    check(student, "ask")
    assert "12" in student.inner_text("body")  # the streamed answer was shown by ask.js
    teacher = page_for("teacher")
    for path in (
        "/bank",
        f"/bank/{problem.pk}",
        "/missed",
        "/runs",
        f"/runs/{run.pk}",
        "/admin/",
        "/admin/tutor/problem/",
        f"/admin/tutor/problem/{problem.pk}/change/",
        "/admin/tutor/apitoken/",
    ):
        response = teacher.goto(live_server.url + path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"] == CSP
        check(teacher, path)
    teacher.goto(f"{live_server.url}/runs/{run.pk}")
    teacher.wait_for_timeout(2500)  # run.js polls after 2 s
    check(teacher, "run poll")
    assert reports == []


# -- check --deploy -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_check_deploy_is_clean_with_the_production_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "SUANJING_HTTPS"))}
    env.update(
        DEBUG="False",
        SECRET_KEY="k" + "7Rq-x9" * 10,  # 61 characters, many distinct: what check --deploy wants
        SUANJING_HTTPS="1",
        SUANJING_PROXY_COUNT="1",
        ALLOWED_HOSTS="tutor.school.lan",
        SUANJING_VAR=str(tmp_path),
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout
    assert "WARNINGS" not in out.stdout + out.stderr
    # the same with plain HTTP is not clean: the test would see a missing setting
    env["SUANJING_HTTPS"] = "0"
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0 and "security.W004" in out.stdout + out.stderr
