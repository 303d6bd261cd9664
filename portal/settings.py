"""Settings for pacsnpull: the one place that reads the environment.

Every variable has a default that works on a developer's machine; the README
lists them. A wrong value stops start-up with an error naming the variable.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from portal.envvars import Env

env = Env(os.environ)

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the portal writes for itself (database, secret key, logs, staging)
# lives in the instance folder, never in the source tree's tracked files.
INSTANCE_DIR = env.path("PACSNPULL_INSTANCE_DIR", BASE_DIR / "instance")
INSTANCE_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    if env.is_set("SECRET_KEY"):
        value = env.str("SECRET_KEY", "")
        if len(value) < 50:
            raise ImproperlyConfigured(
                "SECRET_KEY is too short: expected at least 50 random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
            )
        return value
    key_file = INSTANCE_DIR / "secret_key"
    if not key_file.exists():
        # Created with O_EXCL so two processes starting together agree on one key.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(64))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "crispy_forms",
    "crispy_bootstrap5",
    "csp",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "accounts",
    "pulls",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.headers.NoStoreMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "pulls.audit.events.AuditRequestMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its answer.
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy: the portal's own scripts and styles only (no inline
# script or style anywhere, the admin's included), no frames, forms posting
# back to the portal only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
_SQLITE_OPTIONS = {
    # WAL lets the web server read while workers write; IMMEDIATE takes the
    # write lock at BEGIN so concurrent writers wait (up to the timeout, in
    # portal.sqlite_backend's steps) instead of failing with "database is locked".
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
}
_db_url = env.url(
    "DATABASE_URL",
    f"sqlite:///{INSTANCE_DIR / 'db.sqlite3'}",
    schemes=("postgres", "postgresql", "sqlite"),
)
# Connections are kept between requests and between a worker's tasks
# (CELERY_DB_REUSE_MAX below), SQLite's too: opening one (and registering
# Django's SQL functions on it) cost a worker ~1 ms of CPU per task.
DATABASES = {"default": dj_database_url.parse(_db_url, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's, with a fairer wait for the write lock (see its docstring).
    DATABASES["default"]["ENGINE"] = "portal.sqlite_backend"
    DATABASES["default"]["OPTIONS"] = dict(_SQLITE_OPTIONS)
    # A file, not memory: Celery workers started by the tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(INSTANCE_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts -------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"

# Login lockout (django-axes): after this many failures for one username from
# one address, that pair is refused for the cool-off time, even with the right
# password. Keyed on the pair so nobody can lock a colleague out from elsewhere.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("PACSNPULL_LOGIN_FAILURES", 5, minimum=1, maximum=100)
AXES_COOLOFF_TIME = dt.timedelta(
    minutes=env.int("PACSNPULL_LOCKOUT_MINUTES", 15, minimum=1, maximum=24 * 60)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
AXES_DISABLE_ACCESS_LOG = True  # logins are in the audit log already
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", 8 * 3600, minimum=300, maximum=30 * 86400)

# --- HTTPS (set PACSNPULL_HTTPS=true when served over TLS) -----------------
HTTPS = env.bool("PACSNPULL_HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env.bool("PACSNPULL_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# --- I18N -----------------------------------------------------------------
LANGUAGE_CODE = "en"
TIME_ZONE = env.timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = INSTANCE_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Without collectstatic (tests, first run) WhiteNoise serves from the finders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

# --- Redis and Celery -----------------------------------------------------
# Unset REDIS_URL means: `make run` starts an embedded server on this port.
REDIS_EMBEDDED = not env.is_set("REDIS_URL")
REDIS_EMBEDDED_PORT = env.port("PACSNPULL_REDIS_PORT", 6390)
REDIS_URL = env.url(
    "REDIS_URL", f"redis://127.0.0.1:{REDIS_EMBEDDED_PORT}/0", schemes=("redis", "rediss", "unix")
)

# How long a worker owns the items it claimed; past it the reconciler re-queues
# them. A chunk must finish well inside it (workers renew it while they work).
PACSNPULL_LEASE_SECONDS = env.int("PACSNPULL_LEASE_SECONDS", 600, minimum=2, maximum=86400)
# An item that used up its attempts (crashes, timeouts) ends as failed.
PACSNPULL_MAX_ATTEMPTS = env.int("PACSNPULL_MAX_ATTEMPTS", 3, minimum=1, maximum=50)
# How long a row waits before a retry after a failure that may heal.
PACSNPULL_RETRY_SECONDS = env.int("PACSNPULL_RETRY_SECONDS", 60, minimum=0, maximum=86400)
PACSNPULL_RECONCILE_SECONDS = env.int("PACSNPULL_RECONCILE_SECONDS", 60, minimum=5, maximum=3600)

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Above the longest task (a chunk is bounded by the lease), or Redis would
    # hand an unacknowledged message to a second worker while the first works.
    "visibility_timeout": PACSNPULL_LEASE_SECONDS * 4,
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes every database connection before and after each
# task unless told to reuse them; pulls.workers.tasks closes them as Django closes a
# request's instead: past CONN_MAX_AGE, or unusable after an error.
CELERY_DB_REUSE_MAX = 10_000
CELERY_BEAT_SCHEDULE_FILENAME = str(INSTANCE_DIR / "celerybeat-schedule")
# Two queues: "interactive" (small finds, urgent jobs, the reconciler) has a
# worker of its own, so it never waits behind "bulk" (big finds, retrievals).
# A worker started without -Q serves both; `-Q interactive` serves that one alone.
CELERY_TASK_DEFAULT_QUEUE = "bulk"
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ("interactive", "bulk")
)
CELERY_TASK_ROUTES = {"pulls.tasks.reconcile": {"queue": "interactive"}}
# Find jobs with at most this many rows run on the interactive queue.
PACSNPULL_INTERACTIVE_ROWS = env.int("PACSNPULL_INTERACTIVE_ROWS", 200, minimum=0, maximum=100_000)
# How long a worker goes on with one job's rows on its association before it
# takes the next message from the queue, where other jobs' first rows come first
# (pulls.jobs.queueing.chunk_priority): a job's turn.
PACSNPULL_TURN_SECONDS = env.int("PACSNPULL_TURN_SECONDS", 30, minimum=1, maximum=3600)
CELERY_BEAT_SCHEDULE = {
    "reconcile-leases": {
        "task": "pulls.tasks.reconcile",
        "schedule": float(PACSNPULL_RECONCILE_SECONDS),
    },
    # Projects with a retention (an operator's setting): files of old jobs deleted.
    "apply-retention": {"task": "pulls.tasks.apply_retention", "schedule": 3600.0},
}

# --- DICOM ----------------------------------------------------------------
# The PACS sends C-MOVE results to this AE title and port: register both there.
PACSNPULL_AE_TITLE = env.ae_title("PACSNPULL_AE_TITLE", "PACSNPULL")
PACSNPULL_SCP_PORT = env.port("PACSNPULL_SCP_PORT", 11113)
# Where the PACS reach our storage SCP (what they must register for C-MOVE).
PACSNPULL_SCP_HOST = env.str("PACSNPULL_SCP_HOST", "127.0.0.1")
# Loopback by default; set 0.0.0.0 (or the portal's address) so a real PACS can reach it.
PACSNPULL_SCP_BIND = env.str("PACSNPULL_SCP_BIND", "127.0.0.1")
# Processes of the storage SCP: as many as associations expected at the same
# time (the workers' concurrent C-MOVEs), up to the cores (see scp_processes).
PACSNPULL_SCP_PROCESSES = env.int("PACSNPULL_SCP_PROCESSES", 2, minimum=1, maximum=64)
PACSNPULL_STORAGE_ROOT = env.path("PACSNPULL_STORAGE_ROOT", INSTANCE_DIR / "storage")
PACSNPULL_STAGING_DIR = env.path("PACSNPULL_STAGING_DIR", INSTANCE_DIR / "staging")
# When a PACS cannot deliver to our storage SCP, wait this long for it to come back.
PACSNPULL_SCP_WAIT_SECONDS = env.int("PACSNPULL_SCP_WAIT_SECONDS", 30, minimum=0, maximum=3600)
# Staged instances that no retrieval wants, this long after they arrived, are
# moved to the quarantine folder (and the audit log), never into a project.
PACSNPULL_QUARANTINE_AFTER_SECONDS = env.int(
    "PACSNPULL_QUARANTINE_AFTER_SECONDS", 3600, minimum=60, maximum=30 * 86400
)
PACSNPULL_QUARANTINE_DIR = env.path("PACSNPULL_QUARANTINE_DIR", INSTANCE_DIR / "quarantine")
# Retrieval jobs do not start, and pause, when the storage has less than this free.
PACSNPULL_MIN_FREE_BYTES = env.int("PACSNPULL_MIN_FREE_BYTES", 2 << 30, minimum=0, maximum=1 << 50)
# After a C-MOVE/C-GET's final response, wait this long without a new arrival
# before counting what is missing (some PACS answer before their last C-STORE).
PACSNPULL_ARRIVAL_WAIT_SECONDS = env.int(
    "PACSNPULL_ARRIVAL_WAIT_SECONDS", 5, minimum=0, maximum=600
)

# Query files: bigger ones are refused with a message saying to split them.
PACSNPULL_QUERY_MAX_ROWS = env.int(
    "PACSNPULL_QUERY_MAX_ROWS", 100_000, minimum=1, maximum=10_000_000
)
PACSNPULL_QUERY_MAX_BYTES = env.int(
    "PACSNPULL_QUERY_MAX_BYTES", 20 << 20, minimum=1024, maximum=1 << 30
)

# The demo PACS that `make run` starts on loopback and registers as node DEMO.
PACSNPULL_DEMO_PACS = env.bool("PACSNPULL_DEMO_PACS", True)
PACSNPULL_DEMO_PACS_PORT = env.port("PACSNPULL_DEMO_PACS_PORT", 11242)
PACSNPULL_DEMO_PACS_HOST = env.str("PACSNPULL_DEMO_PACS_HOST", "127.0.0.1")

# --- Logging: no PHI here; patient data goes to the audit log only ----------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        # pynetdicom logs identifiers (patient names, IDs) at DEBUG and INFO.
        "pynetdicom": {"level": "WARNING"},
        # django-axes masks usernames and addresses; lockouts are WARNINGs.
        "axes": {"level": "WARNING"},
        # They log DICOMweb URLs, whose queries name patients, at DEBUG and INFO
        # (dicomweb-client a server's Warning header at WARNING).
        "dicomweb_client": {"level": "ERROR"},
        "urllib3": {"level": "WARNING"},
    },
}


# --- REST API (pulls.api) ---------------------------------------------------
# Personal tokens (Authorization: Bearer) for scripts, the session for the
# browsable pages; every call goes through the pages' services and checks.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "pulls.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["pulls.api.auth.TokenScope"],
    "DEFAULT_THROTTLE_CLASSES": ["pulls.api.auth.TokenRate"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "pulls.api.renderers.BrowsableAPI",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "pulls.api.serializers.Pages",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pacsnpull API",
    "DESCRIPTION": "Find and retrieve DICOM studies in bulk: the portal's jobs, for scripts.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema is for logged-in people and tokens, as every other call.
    "SERVE_PERMISSIONS": ["pulls.api.auth.TokenScope"],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "pulls.models.JobKind",
        "JobStatusEnum": "pulls.models.JobStatus",
        "RowStatusEnum": "pulls.models.ItemStatus",
    },
}
# Requests per minute a token may make (429 with Retry-After past it).
PACSNPULL_API_RATE = env.int("PACSNPULL_API_RATE", 600, minimum=1, maximum=1_000_000)
# Days a new token lasts unless its maker says otherwise.
PACSNPULL_API_TOKEN_DAYS = env.int("PACSNPULL_API_TOKEN_DAYS", 90, minimum=1, maximum=3650)


# --- Notifications (pulls.notifications) -------------------------------------
# The portal's address as people reach it: the links in e-mails and webhooks.
PACSNPULL_BASE_URL = env.str("PACSNPULL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Mail when a job ends, to its owner (each chooses on the account page).
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env.str("EMAIL_HOST", "")  # empty: no mail is sent
EMAIL_PORT = env.port("EMAIL_PORT", 25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 20
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "pacsnpull@localhost")
# A project's webhook: tries before a delivery is given up, the first wait (doubling).
PACSNPULL_WEBHOOK_ATTEMPTS = env.int("PACSNPULL_WEBHOOK_ATTEMPTS", 6, minimum=1, maximum=20)
PACSNPULL_WEBHOOK_RETRY_SECONDS = env.int(
    "PACSNPULL_WEBHOOK_RETRY_SECONDS", 30, minimum=0, maximum=86400
)
