"""SAGA inside vLLM 0.33: a scheduler subclass driven by SAGA's policies.

Importing this package imports vLLM: only the vLLM node agent (and tests/vllm) may import it;
the control plane and the policy layer never do. See docs/vllm.md.
"""

from nodeagent.vllm_hooks.config import SagaConfigError, SagaSchedulerConfig
from nodeagent.vllm_hooks.control import ControlError
from nodeagent.vllm_hooks.scheduler import SagaScheduler, SagaSchedulingMixin, SagaSyncScheduler

__all__ = [
    "ControlError",
    "SagaConfigError",
    "SagaScheduler",
    "SagaSchedulerConfig",
    "SagaSchedulingMixin",
    "SagaSyncScheduler",
]
