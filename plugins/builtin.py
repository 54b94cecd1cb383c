"""The built-in policies, discovered like any third-party module.

The manager always loads this module (datasette's DEFAULT_PLUGINS pattern); the entry point
``builtin = "plugins.builtin"`` in the group ``saga.policies`` points here too, and the registry
deduplicates. A third-party module can expose its policies the same way, with
``__saga_policies__``.
"""

from __future__ import annotations

from plugins.policies.admission import LongestPrefixAdmission, PriorityAdmission, SagaAdmission
from plugins.policies.eviction import AEGEviction, BeladyEviction, LRUEviction, TTLEviction
from plugins.policies.fairness import (
    AFSFairness,
    FCFSFairness,
    LASFairness,
    PLASFairness,
    VTCFairness,
)
from plugins.policies.kvflow import KVFlowEviction
from plugins.policies.routing import (
    LeastLoadedRouting,
    PrefixAwareRouting,
    RoundRobinRouting,
    SagaRouting,
    SessionAffinityRouting,
)
from plugins.policies.thunderagent import (
    ThunderAgentAdmission,
    ThunderAgentEviction,
    ThunderAgentRouting,
)

__saga_policies__ = (
    LRUEviction,
    TTLEviction,
    AEGEviction,
    BeladyEviction,
    ThunderAgentEviction,
    KVFlowEviction,
    RoundRobinRouting,
    LeastLoadedRouting,
    SessionAffinityRouting,
    PrefixAwareRouting,
    SagaRouting,
    ThunderAgentRouting,
    PriorityAdmission,
    LongestPrefixAdmission,
    SagaAdmission,
    ThunderAgentAdmission,
    FCFSFairness,
    VTCFairness,
    PLASFairness,
    AFSFairness,
    LASFairness,
)

DEFAULT_FALLBACKS = {
    "eviction": LRUEviction,
    "routing": SessionAffinityRouting,
    "admission": PriorityAdmission,
    "fairness": FCFSFairness,
}
"""Each kind's last resort: simple, stateless enough never to raise (the baseline set)."""

SAGA_DEFAULTS = {"eviction": "aeg", "routing": "saga", "admission": "saga", "fairness": "afs"}
"""The policies a fresh manager activates: SAGA's mechanisms."""
