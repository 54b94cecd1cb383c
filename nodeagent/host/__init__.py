"""The engine-neutral host layer: what every engine (the simulated one, vLLM's SagaScheduler)
does around its own mechanics, written once.

- :mod:`.tracker`: workflows and their calls on a node (state, tool gaps, idle end), the
  workflow events policies and the AEG learn from, and the views (built with the contract's
  builders in :mod:`plugins.views`);
- :mod:`.retention`: keeping a workflow's KV across a tool (pin at tool start for the eviction
  policy's time, release once its next call is admitted, at the deadline, or at its end);
  engines only say how to pin and unpin blocks;
- :mod:`.policies`: applying activations (oracle-only policies refused), the failure inbox;
- :mod:`.context`: the SchedulingContext policies get.

Engines keep only their mechanics: the step loop, the block pool, the free queue. Nothing here
imports an engine, Django or the control plane.
"""
