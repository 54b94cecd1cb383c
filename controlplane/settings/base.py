"""Settings shared by every environment, read from the environment (12-factor).

Unset ``DATABASE_URL`` means an SQLite file next to the project and unset ``REDIS_URL`` means an
in-memory channel layer and eager Celery: that is what lets ``make demo`` run with nothing but
Python. Production refuses both fallbacks (see ``production.py``).
"""

from __future__ import annotations

from pathlib import Path

from controlplane import env

BASE_DIR = Path(__file__).resolve().parent.parent.parent
STATE_DIR = Path(env.get_str("SAGA_STATE_DIR", str(BASE_DIR / "var")) or BASE_DIR / "var")

SECRET_KEY = env.get_str(
    "SECRET_KEY", "django-insecure-saga-development-key-not-for-production-use-0123456789"
)
DEBUG = env.get_bool("DEBUG", False)
ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "django_celery_beat",
    "controlplane.tenants",
    "controlplane.workflows",
    "controlplane.policies",
    "controlplane.nodes",
    "controlplane.audit",
    "controlplane.slo",
    "controlplane.whatif",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"
WSGI_APPLICATION = "controlplane.wsgi.application"

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
            ],
        },
    },
]

_database_url = env.get_str("DATABASE_URL")
if _database_url:
    DATABASES = {"default": env.database_config(_database_url)}
else:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": STATE_DIR / "saga.sqlite3",
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.finders.PlotlyWheelFinder",  # plotly.min.js from the plotly wheel
]
STATIC_ROOT = STATE_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Channels: Redis when REDIS_URL is set (several ASGI processes share groups), else in-memory
# (one process: the demo).
REDIS_URL = env.get_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels_redis blocks in BZPOPMIN for 5 s; redis-py 8's default 5 s socket
            # timeout aborts that read and crashes every consumer (channels_redis issue 422):
            # the read timeout must outlast the blocking pop.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30,
                                  "socket_connect_timeout": 5}],
                       "prefix": "saga:channels"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: Redis broker and result backend when REDIS_URL is set; otherwise tasks run eagerly in
# the calling process, so the demo needs no worker.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# A node agent heartbeats every NODE_HEARTBEAT_INTERVAL_S; the sweep marks a node down after
# NODE_HEARTBEAT_TIMEOUT_S of silence (three missed beats by default).
NODE_HEARTBEAT_INTERVAL_S = env.get_int("NODE_HEARTBEAT_INTERVAL_S", 5)
NODE_HEARTBEAT_TIMEOUT_S = env.get_int("NODE_HEARTBEAT_TIMEOUT_S", 15)
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-nodes": {
        "task": "controlplane.nodes.tasks.sweep_stale_nodes",
        "schedule": float(NODE_HEARTBEAT_INTERVAL_S),
    },
    # Work stealing between nodes (saga_rebalance of the active routing policy).
    "rebalance-workflows": {
        "task": "controlplane.nodes.tasks.rebalance_workflows",
        "schedule": float(env.get_int("REBALANCE_INTERVAL_S", 2)),
    },
    # End workflows idle for their template's timeout as abandoned (frees quota, SLO missed).
    "reap-idle-workflows": {
        "task": "controlplane.workflows.tasks.reap_idle_workflows",
        "schedule": float(env.get_int("SAGA_REAP_INTERVAL_S", 30)),
    },
    # Per-tenant SLO series: a point per tenant per closed window of every tier.
    "aggregate-slo-series": {
        "task": "controlplane.slo.tasks.aggregate_slo_series",
        "schedule": float(env.get_int("SAGA_SLO_INTERVAL_S", 10)),
    },
}

# What-if replays (controlplane.whatif): the Celery queue their tasks go to (empty: Celery's
# default queue; workers on other machines sharing DATABASE_URL and REDIS_URL take them from it),
# the longest window a replay may read, and whether they run in this process instead of on
# workers (saga demo sets it; eager Celery, without REDIS_URL, implies it).
SAGA_WHATIF_QUEUE = env.get_str("SAGA_WHATIF_QUEUE", "") or ""
SAGA_WHATIF_MAX_WINDOW_S = env.get_int("SAGA_WHATIF_MAX_WINDOW_S", 7 * 24 * 3600)
SAGA_WHATIF_IN_PROCESS = env.get_bool("SAGA_WHATIF_IN_PROCESS", False)
# Key of the prompt-structure digests (controlplane.whatif.digests); empty: derived from
# SECRET_KEY. Changing it makes earlier recordings share no prefix with later ones.
SAGA_REPLAY_DIGEST_KEY = env.get_str("SAGA_REPLAY_DIGEST_KEY", "") or ""

# A workflow with no call, tool or state event for this long (and no call in flight) is ended
# as abandoned; AgentTemplate.idle_timeout_s overrides it per template.
SAGA_WORKFLOW_IDLE_TIMEOUT_S = env.get_int("SAGA_WORKFLOW_IDLE_TIMEOUT_S", 30 * 60)
# SLO series tiers, "resolution:retention" in seconds: 10 s points for a day, 5 min for 30 days,
# 1 h for a year. The first resolution is the aggregation interval (SAGA_SLO_INTERVAL_S).
SAGA_SLO_INTERVAL_S = env.get_int("SAGA_SLO_INTERVAL_S", 10)
SAGA_SLO_TIERS = env.get_list("SAGA_SLO_TIERS", [
    f"{SAGA_SLO_INTERVAL_S}:86400", "300:2592000", "3600:31536000"])

# The gateway authenticates to node agents with this shared key (nodes get it as
# SAGA_NODE_API_KEY); empty means nodes accept unauthenticated calls (local demo only).
SAGA_NODE_API_KEY = env.get_str("SAGA_NODE_API_KEY", "") or ""
GATEWAY_UPSTREAM_READ_TIMEOUT_S = float(env.get_int("GATEWAY_UPSTREAM_READ_TIMEOUT_S", 600))
# Bearer token Prometheus scrapes /metrics with; unset: loopback clients only.
SAGA_METRICS_TOKEN = env.get_str("SAGA_METRICS_TOKEN", "") or ""
# Largest /v1 request body the gateway reads (413 above): 8 MiB holds a 1M-token prompt's text.
GATEWAY_MAX_BODY_BYTES = env.get_int("GATEWAY_MAX_BODY_BYTES", 8 * 1024 * 1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.get_str("LOG_LEVEL", "INFO")},
}
