"""Atelier settings: one module, driven by environment variables (12-factor).

The one-command demo runs with no variables at all: SQLite under ``var/``, files under
``var/media``, Celery tasks run eagerly unless a broker is configured. Tests and production set
``DATABASE_URL`` and ``CELERY_BROKER_URL``. With ``DJANGO_DEBUG`` off, a ``SECRET_KEY`` is required.
"""

import ipaddress
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("ATELIER_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it (production) or set DJANGO_DEBUG=1 (local demo)."
        )
    SECRET_KEY = "insecure-local-only-" + str(BASE_DIR)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("ATELIER_SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "core",
    "registry",
    "marketplace",
    "federated",
    "studio",
    "demo",
]

MIDDLEWARE = [
    # First: drops an unread request body before the answer, so a refused request (413, 401,
    # 429) leaves a kept-alive connection usable under gunicorn (core.bodies).
    "core.bodies.UnreadBodyMiddleware",
    "core.middleware.ApiErrorMiddleware",  # /api/: every error in the JSON shape, DEBUG or not
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.security.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "core.security.csp_nonce",
                "config.context_processors.site_header",  # balance, pending, nav by role
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'atelier.sqlite3'}")
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo's embedded database under a threaded web server: readers never block the
    # writer (WAL), a writer waits its turn up to 20 s instead of failing at once, and every
    # transaction takes the write lock when it begins (IMMEDIATE), so two of them can never
    # both hold a read lock and deadlock on the upgrade ("database is locked").
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_TIMEOUT", default=20),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Argon2id first (argon2-cffi); the others still verify older hashes and upgrade them on login.
PASSWORD_HASHERS = env.list(
    "PASSWORD_HASHERS",
    default=[
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ],
)
# Log in through the lockout backend (core.security); ModelBackend stays for sessions it made.
AUTHENTICATION_BACKENDS = [
    "core.security.LockoutModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "registry:browse"
LOGOUT_REDIRECT_URL = "registry:browse"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Model and dataset files on local storage: outside MEDIA_ROOT, never served as media.
BLOB_ROOT = Path(env.str("BLOB_ROOT", default=str(VAR_DIR / "blobs")))

# Storage: the filesystem by default; any S3-compatible service when a bucket is named.
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default=None)
    AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")
    AWS_QUERYSTRING_EXPIRE = env.int("AWS_QUERYSTRING_EXPIRE", default=300)
    AWS_DEFAULT_ACL = None
    AWS_S3_FILE_OVERWRITE = False
    _file_storage = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {}}
    # Model and dataset files: a private bucket (default: the same one), presigned GETs only,
    # never a public custom domain.
    _blob_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("AWS_BLOB_BUCKET_NAME", default=AWS_STORAGE_BUCKET_NAME),
            "location": env.str("AWS_BLOB_LOCATION", default=""),
            "querystring_auth": True,
            "custom_domain": None,
            "default_acl": "private",
        },
    }
else:
    _file_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
    _blob_storage = {
        "BACKEND": "registry.storage.PrivateFileSystemStorage",
        "OPTIONS": {"location": str(BLOB_ROOT)},
    }
STORAGES: dict[str, dict[str, Any]] = {  # the type Django's settings give it
    "default": _file_storage,  # public media: sample images, previews, generated images
    "blobs": _blob_storage,  # model and dataset files: no URL maps to them (registry.storage)
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serving a private file after the entitlement check: "" streams it from the web process;
# "x-accel-redirect" (nginx) or "x-sendfile" (Apache, lighttpd) hands it to the proxy. With
# nginx, ATELIER_SENDFILE_PREFIX is the `internal` location aliased to BLOB_ROOT.
ATELIER_SENDFILE = env.str("ATELIER_SENDFILE", default="").lower()
ATELIER_SENDFILE_PREFIX = env.str("ATELIER_SENDFILE_PREFIX", default="/_blobs/")

# Uploads: parts are written here while they stream in, then moved to storage.
UPLOAD_TEMP_DIR = Path(env.str("ATELIER_UPLOAD_DIR", default=str(VAR_DIR / "uploads")))
ATELIER_MAX_UPLOAD_BYTES = env.int("ATELIER_MAX_UPLOAD_BYTES", default=16 * 1024**3)
ATELIER_UPLOAD_CHUNK_BYTES = env.int("ATELIER_UPLOAD_CHUNK_BYTES", default=4 * 1024**2)
ATELIER_SIGNED_URL_TTL = env.int("ATELIER_SIGNED_URL_TTL", default=300)
ATELIER_PLATFORM_FEE_BPS = env.int("ATELIER_PLATFORM_FEE_BPS", default=1000)  # marketplace
# The smallest payout a seller may ask for, in credits.
ATELIER_PAYOUT_MINIMUM = env.int("ATELIER_PAYOUT_MINIMUM", default=1000)
# The largest sample image or dataset preview, in bytes.
ATELIER_MAX_IMAGE_BYTES = env.int("ATELIER_MAX_IMAGE_BYTES", default=10 * 1024**2)
# Wallet top-ups: "" none (refused, a startup warning), "none" (off on purpose), "demo" (approves
# everything: DEBUG only, unless ATELIER_ALLOW_DEMO_PAYMENTS) or a PaymentProvider class path.
ATELIER_PAYMENT_PROVIDER = env.str("ATELIER_PAYMENT_PROVIDER", default="")
ATELIER_ALLOW_DEMO_PAYMENTS = env.bool("ATELIER_ALLOW_DEMO_PAYMENTS", default=False)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    # JSON bodies: depth, 64-bit integers and no NUL characters (core.parsers).
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.LimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Stock DRF throttles read REMOTE_ADDR only; ours use core.throttles.client_address.
    "NUM_PROXIES": 0,
    # Rate limits (core.throttles): "N/second|minute|hour|day", from the environment.
    "DEFAULT_THROTTLE_CLASSES": ["core.throttles.ApiThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api": env.str("ATELIER_RATE_API", default="3000/min"),
        "login": env.str("ATELIER_RATE_LOGIN", default="30/min"),
        "downloads": env.str("ATELIER_RATE_DOWNLOADS", default="600/min"),
        "generation": env.str("ATELIER_RATE_GENERATION", default="30/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Atelier API",
    "DESCRIPTION": "Publish, buy and train Stable Diffusion models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.add_error_responses",
    ],
}

# Celery: Redis in tests and production; tasks run in-process when no broker is configured.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The demo's embedded broker: a folder under var/, no server needed.
    _queue_dir = VAR_DIR / "celery-queue"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        # Broadcast exchanges (worker control); kombu's default is ./control in the cwd.
        "control_folder": str(VAR_DIR / "celery-control"),
    }
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3600)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=3300)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # API tokens never reach a log line (?token= on download links): core.redaction.
    "filters": {"redact_tokens": {"()": "core.redaction.RedactTokensFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_tokens"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # httpx logs every request at INFO: one line per Control API poll of the coordinator.
    "loggers": {"httpx": {"level": "WARNING"}},
}

# Production hardening; `manage.py check --deploy` is clean with DJANGO_DEBUG off.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# ATELIER_HTTPS=0 serves plain HTTP on loopback (demo, tests); production keeps the default.
HTTPS = env.bool("ATELIER_HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
WHITENOISE_USE_FINDERS = True

# --- Security: caches (throttle counters, lockouts), lockout, quotas, CSP -----------------
# Redis in tests and production (REDIS_CACHE_URL, a database of its own: tests clear it);
# a per-process local-memory cache for the demo.
REDIS_CACHE_URL = env.str("REDIS_CACHE_URL", default="")
if REDIS_CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_CACHE_URL,
            "KEY_PREFIX": "atelier",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# N failed logins for one username from one address lock that pair out for the window.
ATELIER_LOGIN_MAX_FAILURES = env.int("ATELIER_LOGIN_MAX_FAILURES", default=10)
ATELIER_LOGIN_LOCKOUT_SECONDS = env.int("ATELIER_LOGIN_LOCKOUT_SECONDS", default=15 * 60)
# Past this many failures for one username from all addresses in the window, each address may
# fail only ..._UNDER_ATTACK times; a right password from an address that has not failed
# still logs in (core.services: a stranger slows guessing down, never locks the owner out).
ATELIER_LOGIN_ACCOUNT_MAX_FAILURES = env.int("ATELIER_LOGIN_ACCOUNT_MAX_FAILURES", default=50)
ATELIER_LOGIN_MAX_FAILURES_UNDER_ATTACK = env.int(
    "ATELIER_LOGIN_MAX_FAILURES_UNDER_ATTACK", default=3
)
# Proxies whose X-Forwarded-For is believed (addresses or CIDR networks, comma-separated):
# the client is the right-most address in that header that is not one of them. Empty: the
# peer's address (REMOTE_ADDR), whatever the header says. See docs/production.md.
ATELIER_TRUSTED_PROXIES = env.list("ATELIER_TRUSTED_PROXIES", default=[])
for _proxy in ATELIER_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy.strip(), strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"ATELIER_TRUSTED_PROXIES: {_exc}") from _exc
# Bytes each user may keep in completed uploads (0: no quota). Staff are not limited.
ATELIER_UPLOAD_QUOTA_BYTES = env.int("ATELIER_UPLOAD_QUOTA_BYTES", default=100 * 1024**3)
# Content-Security-Policy: scripts only from our origin or with the per-response nonce.
ATELIER_CSP = env.str(
    "ATELIER_CSP",
    default=(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# A task whose worker died unacknowledged (acks_late) goes back to the queue after this.
# Workers look for such tasks every `interval` s, scanning on every `throttle`-th look (kombu's
# defaults, 10 and 10: a scan every ~100 s); a shorter timeout gets scans as often as it.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    _visibility = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
    _restore_interval = max(1, min(10, _visibility))
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": _visibility,
        "unacked_restore_interval": _restore_interval,
        "unacked_restore_throttle": max(1, min(100, _visibility) // _restore_interval),
    }

# --- Federated jobs: the coordinator's SuperLink (federated.coordinator) -------------------
# The SuperLink's Control API (host:port on a private address; the site is its only client).
# Empty: no federation, jobs stay queued.
ATELIER_SUPERLINK = env.str("ATELIER_SUPERLINK", default="")
# TLS to the SuperLink's Control API unless told otherwise (ATELIER_SUPERLINK_INSECURE=1);
# the SuperLink's CA certificate (PEM) when it is not one the system trusts.
ATELIER_SUPERLINK_INSECURE = env.bool("ATELIER_SUPERLINK_INSECURE", default=False)
ATELIER_SUPERLINK_ROOT_CERTIFICATES = env.str("ATELIER_SUPERLINK_ROOT_CERTIFICATES", default="")
# The SuperLink runs with --enable-supernode-auth (it needs TLS): the site registers each node's
# public key there when the node is registered, and unregisters it when the node is revoked.
ATELIER_SUPERLINK_NODE_AUTH = env.bool(
    "ATELIER_SUPERLINK_NODE_AUTH", default=not ATELIER_SUPERLINK_INSECURE
)
ATELIER_FLWR_HOME = Path(env.str("ATELIER_FLWR_HOME", default=str(VAR_DIR / "flwr")))
# ServerApp out-dirs, one per job: shared between the Celery workers and the SuperLink host.
ATELIER_FEDERATION_DIR = Path(
    env.str("ATELIER_FEDERATION_DIR", default=str(VAR_DIR / "federation"))
)
ATELIER_SITE_URL = SITE_URL  # the base URL nodes and the ServerApp use to reach the site
ATELIER_JOB_POLL_SECONDS = env.float("ATELIER_JOB_POLL_SECONDS", default=10.0)
CELERY_BEAT_SCHEDULE = {
    "federated-jobs-reconcile": {
        "task": "federated.tasks.jobs_reconcile",
        "schedule": env.float("ATELIER_JOB_RECONCILE_SECONDS", default=300.0),
    },
    "federated-nodes-superlink-reconcile": {
        "task": "federated.tasks.nodes_superlink_reconcile",
        "schedule": env.float("ATELIER_JOB_RECONCILE_SECONDS", default=300.0),
    },
}

# --- Studio: image generation on the Celery worker (studio/limits.py reads these) ---------
# "auto": CUDA when the worker sees a GPU, else CPU. A GPU worker can take generations on a
# queue of its own (`celery worker -Q generation`, with ATELIER_GENERATION_QUEUE=generation).
ATELIER_GENERATION_DEVICE = env.str("ATELIER_GENERATION_DEVICE", default="auto")
ATELIER_GENERATION_QUEUE = env.str("ATELIER_GENERATION_QUEUE", default="")
ATELIER_GENERATION_MAX_STEPS = env.int("ATELIER_GENERATION_MAX_STEPS", default=50)
ATELIER_GENERATION_MAX_SIDE = env.int("ATELIER_GENERATION_MAX_SIDE", default=1024)
ATELIER_GENERATION_MAX_PIXELS = env.int("ATELIER_GENERATION_MAX_PIXELS", default=1024 * 768)
ATELIER_GENERATION_MAX_ACTIVE = env.int("ATELIER_GENERATION_MAX_ACTIVE", default=3)
ATELIER_GENERATION_TIME_LIMIT = env.int("ATELIER_GENERATION_TIME_LIMIT", default=600)
# Sample images rendered on publish (studio/services/samples.py): on or off, at most this
# many steps (0: the checkpoint's native steps), at this guidance.
ATELIER_SAMPLES_ON_PUBLISH = env.bool("ATELIER_SAMPLES_ON_PUBLISH", default=True)
ATELIER_SAMPLE_MAX_STEPS = env.int("ATELIER_SAMPLE_MAX_STEPS", default=0)
ATELIER_SAMPLE_GUIDANCE = env.float("ATELIER_SAMPLE_GUIDANCE", default=5.0)
# Model files the worker loads (links to stored blobs, or copies from object storage).
ATELIER_MODEL_CACHE_DIR = Path(
    env.str("ATELIER_MODEL_CACHE_DIR", default=str(VAR_DIR / "model-cache"))
)
