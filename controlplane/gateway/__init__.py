"""The OpenAI-compatible gateway: tenant keys, workflow-aware routing to node agents, recording.

Agents point an unmodified OpenAI client at ``/v1``; the gateway finds (or creates) the call's
workflow, routes it with the active routing policy (homes shared through Redis), forwards it to
the node with back-pressure, and records the call, tool boundaries and usage.
"""
