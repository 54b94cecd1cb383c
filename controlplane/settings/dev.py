"""Local development and the demo: DEBUG on, embedded defaults unless the environment says."""

from controlplane import env
from controlplane.settings.base import *  # noqa: F403

DEBUG = env.get_bool("DEBUG", True)
