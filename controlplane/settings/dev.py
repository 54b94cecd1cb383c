"""Local development and the demo: DEBUG on, embedded defaults unless the environment says."""

from controlplane import env
from controlplane.settings.base import *  # noqa: F403

DEBUG = env.get_bool("DEBUG", True)

# WhiteNoise serves straight from the apps' static folders in DEBUG; it still wants the
# collectstatic target to exist.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
