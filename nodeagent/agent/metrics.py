"""Prometheus metrics of a node agent, read from the engine at scrape time.

Names follow vLLM's (``vllm:``) where they mean the same thing, so existing vLLM dashboards work
unchanged; SAGA's own series are under ``saga:``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from nodeagent.agent.engine import Engine

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)

# (engine counter key, metric name, help): counters the engine keeps itself.
ENGINE_COUNTERS = (
    ("prompt_tokens", "vllm:prompt_tokens", "Prompt tokens processed (prefill), cached or not."),
    ("generation_tokens", "vllm:generation_tokens", "Output tokens generated."),
    ("prefix_cache_queries", "vllm:prefix_cache_queries", "Prompt tokens looked up in the "
     "prefix cache."),
    ("prefix_cache_hits", "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache."),
    ("preemptions", "vllm:num_preemptions", "Requests preempted (recomputed later)."),
    ("recompute_tokens", "saga:recompute_tokens", "Prefill tokens re-done because cached KV "
     "had been evicted."),
)


class _EngineCollector(Collector):
    def __init__(self, engine: Engine, connected: Callable[[], bool]) -> None:
        self.engine = engine
        self.connected = connected

    def collect(self) -> Iterator[Any]:
        load = self.engine.load()
        counters = self.engine.counters()
        for name, value, text in (
            ("vllm:num_requests_running", load.running, "Requests in the running batch."),
            ("vllm:num_requests_waiting", load.waiting, "Requests waiting to be admitted."),
            ("vllm:kv_cache_usage_perc",
             load.kv_used_tokens / load.kv_total_tokens if load.kv_total_tokens else 0.0,
             "KV cache usage (1 = full)."),
            ("saga:queue_delay_seconds", load.queue_delay_s,
             "Estimated delay before a new call is admitted."),
            ("saga:control_plane_connected", 1.0 if self.connected() else 0.0,
             "1 while the control connection is up."),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        for key, name, text in ENGINE_COUNTERS:
            yield CounterMetricFamily(name, text, value=counters.get(key, 0.0))
        failures = CounterMetricFamily("saga:policy_failures", "Policies that raised at run "
                                       "time and were replaced by the last good one.",
                                       value=counters.get("policy_failures", 0.0))
        yield failures
        info = InfoMetricFamily("saga:policy", "Policy active per kind.", labels=["kind"])
        for kind, active in sorted(self.engine.active_policies().items()):
            info.add_metric([kind], {"policy": active})
        yield info


class NodeMetrics:
    """The agent's registry: engine state plus request histograms the HTTP layer observes."""

    def __init__(self, engine: Engine, connected: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, connected))
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.",
                             ["finished_reason"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
