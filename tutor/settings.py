"""Suanjing's Django settings: one file, read from environment variables with safe defaults.

Every variable is listed in README.md ("Settings"); tests/test_docs.py checks that list against this file.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default)
    if value not in ("True", "False"):
        raise ImproperlyConfigured(f"{name}={value!r}: use 'True' or 'False'")
    return value == "True"


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: use a whole number") from None


def envfloat(name: str, default: str) -> float:
    value = os.getenv(name, default)
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: use a number") from None


DEBUG = envbool("DEBUG", "False")
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is not set (or set DEBUG=True for development)")
    SECRET_KEY = "dev-only-insecure-key"
ALLOWED_HOSTS = [
    h for h in os.getenv("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tasks",
    "django_tasks_db",
    "tutor",
    "axes",  # login lockout (AXES_* below)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "tutor.middleware.SecurityHeadersMiddleware",  # Content-Security-Policy (SUANJING_CSP)
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tutor.errors.ErrorMiddleware",  # a TutorError a page lets through: its status
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
]

ROOT_URLCONF = "tutor.urls"
WSGI_APPLICATION = "tutor.wsgi.application"
ASGI_APPLICATION = "tutor.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tutor.context_processors.role",
            ],
        },
    },
]

VAR_DIR = Path(os.getenv("SUANJING_VAR", str(BASE_DIR / "var")))
DATABASE_URL = os.getenv("DATABASE_URL", "")
if DATABASE_URL:
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "suanjing.sqlite3",
            # WAL lets readers (pages) run while a writer (a worker storing answers) commits.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
                "transaction_mode": "IMMEDIATE",
            },
            # Tests use a file too, not Django's shared in-memory database: live generation writes from
            # its own thread, and shared-cache SQLite reports "table is locked" instead of waiting.
            "TEST": {"NAME": str(VAR_DIR / "test-suanjing.sqlite3")},
            # Keep each thread's connection between requests: opening one (and running the PRAGMAs
            # above) was a sixth of a cache hit's time under load.
            "CONN_MAX_AGE": 600,
        }
    }


DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "zh-hans"
TIME_ZONE = os.getenv("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(
    parents=True, exist_ok=True
)  # var/ holds the SQLite file too; whitenoise wants it
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# -- Suanjing --------------------------------------------------------------------------------
SUANJING_MODELS = Path(os.getenv("SUANJING_MODELS", str(BASE_DIR / "models")))
SUANJING_MODEL = os.getenv("SUANJING_MODEL", "")  # empty: the best prepared model
SUANJING_THREADS = envint("SUANJING_THREADS", "0")  # 0: all cores
SUANJING_KV_CACHE_GB = envfloat("SUANJING_KV_CACHE_GB", "1")
# The engine is a service reached by URL (solver.remote.RemoteEngine): an OpenAI-compatible base URL such
# as "http://engine.school.lan:8765/v1" (`python -m solver serve` there, or vLLM, llama.cpp's server, OVMS).
# Empty: the site starts one `python -m solver serve` for SUANJING_MODEL on this machine, on 127.0.0.1 at
# SUANJING_ENGINE_PORT, shared by every web and worker process of this SUANJING_VAR.
SUANJING_ENGINE_URL = os.getenv("SUANJING_ENGINE_URL", "").strip()
if SUANJING_ENGINE_URL and not SUANJING_ENGINE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("SUANJING_ENGINE_URL must start with http:// or https://")
SUANJING_ENGINE_PORT = envint("SUANJING_ENGINE_PORT", "8765")
if not 1 <= SUANJING_ENGINE_PORT <= 65535:
    raise ImproperlyConfigured("SUANJING_ENGINE_PORT must be a port number (1-65535)")
SUANJING_ENGINE_API_KEY = os.getenv("SUANJING_ENGINE_API_KEY", "")  # sent as a Bearer token
# The prompt family of a model served by URL that is not in SUANJING_MODELS ("r1-distill" or "chatml");
# empty: told from the served model's name.
SUANJING_ENGINE_FAMILY = os.getenv("SUANJING_ENGINE_FAMILY", "")
SUANJING_MAX_NEW_TOKENS = envint("SUANJING_MAX_NEW_TOKENS", "2048")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO: each health check and completion sent to the engine service.
    "loggers": {"httpx": {"level": "WARNING"}},
}
# Students may be served answers nobody has checked yet (clearly labelled); False: approved + verified only.
SUANJING_SERVE_UNVERIFIED = envbool("SUANJING_SERVE_UNVERIFIED", "True")
# Live generations running at once; one more gets "busy, try again" (HTTP 429 with Retry-After).
SUANJING_MAX_LIVE_JOBS = envint("SUANJING_MAX_LIVE_JOBS", "4")
# Fair use: questions one student may ask per minute (a sliding window over their stored questions);
# one more is refused with HTTP 429 and Retry-After, counted, not stored.
SUANJING_ASKS_PER_MINUTE = envint("SUANJING_ASKS_PER_MINUTE", "20")
# A live generation nobody is watching (no stream open, no poll) is cancelled after this many seconds.
SUANJING_LIVE_ORPHAN_S = envint("SUANJING_LIVE_ORPHAN_S", "30")
# Streams (SSE) one account may hold open in one web process; a stream is closed after this many
# seconds and the browser reconnects by itself where it left off (a connection never lives for ever).
# Live generations one account may have running at a time.
SUANJING_LIVE_PER_STUDENT = envint("SUANJING_LIVE_PER_STUDENT", "1")
# A background worker (`manage.py worker`) that has not beaten for this long is taken for dead, and the
# task it was running is settled by another worker (tutor/services/workers.py).
SUANJING_WORKER_LEASE_S = envint("SUANJING_WORKER_LEASE_S", "90")
SUANJING_STREAMS_PER_USER = envint("SUANJING_STREAMS_PER_USER", "4")
SUANJING_STREAM_MAX_S = envint("SUANJING_STREAM_MAX_S", "600")
# Optional: Redis pub/sub wakes live-answer streams in every web process at once (else they poll the
# database every 150 ms). Nothing is stored there.
REDIS_URL = os.getenv("REDIS_URL", "").strip()
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")
# Students may create their own accounts on /signup.
SUANJING_SIGNUP = envbool("SUANJING_SIGNUP", "True")
# The sentence embedder of the answer cache: "minilm", "use-multilingual" or "st:PATH".
SUANJING_EMBEDDER = os.getenv("SUANJING_EMBEDDER", "use-multilingual")
# "openvino" embeds about 2x faster than "torch" on the CPU; the first start exports the model (~10 s).
SUANJING_EMBEDDER_BACKEND = os.getenv("SUANJING_EMBEDDER_BACKEND", "openvino")
if SUANJING_EMBEDDER_BACKEND not in ("openvino", "torch"):
    raise ImproperlyConfigured("SUANJING_EMBEDDER_BACKEND must be 'openvino' or 'torch'")
# The cache's similarity threshold; empty: the cache's own calibrated default.
SUANJING_CACHE_THRESHOLD = os.getenv("SUANJING_CACHE_THRESHOLD", "")
if SUANJING_CACHE_THRESHOLD:
    SUANJING_CACHE_THRESHOLD = envfloat("SUANJING_CACHE_THRESHOLD", "0")

# Background work (batch precompute) runs on Django's tasks API (django-tasks, the backport of Django 6.0's
# django.tasks) with the queue in this same database; start workers with `manage.py worker`.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
# Precompute: a problem's majority answer of K >= 3 samples is verified at this agreement (default 2/3).
SUANJING_MIN_AGREEMENT = envfloat("SUANJING_MIN_AGREEMENT", str(2 / 3))
if not 0 < SUANJING_MIN_AGREEMENT <= 1:
    raise ImproperlyConfigured("SUANJING_MIN_AGREEMENT must be in (0, 1]")
# Precompute: a claimed item whose worker has not renewed its claim for this long is given to another
# worker (a live worker renews every LEASE/5 s, however long its generations take).
SUANJING_PRECOMPUTE_LEASE_S = envint("SUANJING_PRECOMPUTE_LEASE_S", "300")
if SUANJING_PRECOMPUTE_LEASE_S < 2:
    raise ImproperlyConfigured("SUANJING_PRECOMPUTE_LEASE_S must be at least 2")
# Precompute: sequences a worker keeps in the engine at once (continuous batching window).
SUANJING_PRECOMPUTE_BATCH = envint("SUANJING_PRECOMPUTE_BATCH", "16")

# A question longer than this is refused (the page says so); bodies are capped a little above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# -- accounts, sessions and headers (issue 13) ------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The throttles' counters (sign-up per IP, API bearer failures per IP) must hold across every web
# process: the database cache table (`manage.py createcachetable`, run by setup.sh) or Redis.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "suanjing_throttle",
        }
    ),
}
# Sign-up: accounts one client IP may create per hour; a code students must type (empty: open).
SUANJING_SIGNUPS_PER_HOUR = envint("SUANJING_SIGNUPS_PER_HOUR", "5")
SUANJING_SIGNUP_CODE = os.getenv("SUANJING_SIGNUP_CODE", "").strip()
# Proxies in front of the site that append to X-Forwarded-For (nginx as in README.md: 1); 0: none, the
# client is REMOTE_ADDR. The throttles and the login lockout count per client address.
SUANJING_PROXY_COUNT = envint("SUANJING_PROXY_COUNT", "0")

# Login lockout (django-axes): 10 wrong passwords for one username from one address lock that pair out
# for 15 minutes (the login page says so in both languages); a right password resets the count.
AUTHENTICATION_BACKENDS = [
    "tutor.throttle.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("SUANJING_LOGIN_FAILURES", "10")
AXES_COOLOFF_TIME = timedelta(minutes=envint("SUANJING_LOGIN_LOCKOUT_MINUTES", "15"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "tutor.throttle.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_HTTP_RESPONSE_CODE = 429
# The JSON API: wrong bearer tokens one address may send in 15 minutes before it gets 429 for a while.
SUANJING_TOKEN_FAILURES = envint("SUANJING_TOKEN_FAILURES", "30")

# Sessions on shared lab PCs: 8 hours at most, and gone when the browser closes (unless set False).
SESSION_COOKIE_AGE = envint("SUANJING_SESSION_HOURS", "8") * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = envbool("SUANJING_SESSION_BROWSER_CLOSE", "True")
# Served over HTTPS (nginx in front terminates TLS, README "Running it safely"): Secure cookies, plain
# HTTP redirected, HSTS for SUANJING_HSTS_SECONDS.
_https = os.getenv("SUANJING_HTTPS", "0")
if _https not in ("0", "1", "True", "False"):
    raise ImproperlyConfigured(f"SUANJING_HTTPS={_https!r}: use 1 or 0")
SUANJING_HTTPS = _https in ("1", "True")
SUANJING_HSTS_SECONDS = envint("SUANJING_HSTS_SECONDS", "31536000")
if SUANJING_HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = SUANJING_HSTS_SECONDS
    SECURE_HSTS_INCLUDE_SUBDOMAINS = SUANJING_HSTS_SECONDS > 0
if SUANJING_PROXY_COUNT > 0:
    # nginx sets X-Forwarded-Proto $scheme (and strips what the client sent): the request was HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Not asked for: HSTS preload puts the school's domain on the browsers' built-in list, a decision for
# whoever owns the domain, not for this site's settings (set it at nginx if wanted).
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# API tokens issued by `manage.py api_token` expire after this many days (0: never).
SUANJING_TOKEN_DAYS = envint("SUANJING_TOKEN_DAYS", "30")
# The Content-Security-Policy of every response: scripts, styles and everything else from this site
# only (no inline script or style attribute in the pages), images also as data: URLs (the math renderer
# and the admin's icons), never framed.
SUANJING_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
