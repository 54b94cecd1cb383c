"""Production settings: every fallback of ``base`` that is only safe on a laptop is refused.

Passes ``manage.py check --deploy`` with no warnings once ``SECRET_KEY``, ``ALLOWED_HOSTS``,
``DATABASE_URL``, ``REDIS_URL`` and ``SAGA_NODE_API_KEY`` are set
(``tests/controlplane/test_settings.py`` checks it).
"""

from controlplane import env
from controlplane.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = env.get_str("SECRET_KEY", required=True)
if SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 50:  # type: ignore[union-attr]
    raise env.ConfigurationError("SECRET_KEY must be at least 50 random characters")
ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise env.ConfigurationError("environment variable ALLOWED_HOSTS is required")
env.get_str("DATABASE_URL", required=True)
env.get_str("REDIS_URL", required=True)
# Node agents accept calls only with this key: without it anyone who reaches a node could send
# it prompts under any X-Saga-Tenant.
SAGA_NODE_API_KEY = env.get_str("SAGA_NODE_API_KEY", required=True)
if len(SAGA_NODE_API_KEY) < 32:  # type: ignore[arg-type]
    raise env.ConfigurationError("SAGA_NODE_API_KEY must be at least 32 random characters")

# TLS terminates at the load balancer, which sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.get_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env.get_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
