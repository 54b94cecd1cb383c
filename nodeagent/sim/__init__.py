"""Simulated GPU engine: cost model, engine and cluster harness.

Public API (import from the modules; this package imports nothing eagerly):

* :mod:`nodeagent.sim.costmodel` - ``CostModel`` (step and isolated-call latency, capacity).
* :mod:`nodeagent.sim.kvcache` - ``TreeIndex`` and ``SegmentKVCache``: a node's paged KV cache
  as cached prefixes of ContextTree segments (exact at 16-token blocks), pins, leaf eviction.
* :mod:`nodeagent.sim.engine` - ``SimEngine`` (one vLLM V1 instance: continuous batching,
  chunked prefill, prefix caching, preemption by recompute, macro-steps), ``SimCall``,
  ``EngineConfig``, the ``EngineHost`` protocol an embedding (cluster, node agent) implements.
* :mod:`nodeagent.sim.cluster` - ``Cluster`` / ``ClusterConfig`` / ``ClusterResult``: N engines,
  agents replaying workflows, routing and work stealing, one global event heap.
* :mod:`nodeagent.sim.clock` - ``SimulatedClock``: the bench cluster's clock (as fast as possible).
* :mod:`nodeagent.sim.prepared` - ``prepare(workload, cost)``: per-call paths and isolated times.
* :mod:`nodeagent.sim.belady_bound` - ``recompute_lower_bound``: the offline yardstick, a true
  lower bound on any eviction order's recompute; :mod:`nodeagent.sim.belady` - the timeline
  replay of farthest-next-use (like-for-like heuristic).
"""
