"""SAGA policy layer: views, hookspecs, policy manager, Agent Execution Graph, policies.

Engine-agnostic by design: nothing here imports Django or vLLM, so the same policy objects run
in the simulated engine and inside vLLM.
"""

from plugins.hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec"]
