"""Offered load: an objective measure of how hard a workload drives a cluster.

The load must not depend on the policy under test (a better cache must not "lower the load"),
so the work is counted under a PERFECT, UNBOUNDED prefix cache, and priced by the cost model at
the throughput-optimal operating point (see ``OFFERED_LOAD_DEFINITION``).
"""

from __future__ import annotations

from nodeagent.sim.costmodel import CostModel
from nodeagent.workloads.model import ROOT, Workload, poisson_arrivals, with_arrivals
from nodeagent.workloads.tenants import apply_noisy_bursts

OFFERED_LOAD_DEFINITION = (
    "offered load = (GPU work arriving per second) / (cluster compute capacity). GPU work of a "
    "workflow = sum over its calls of [prefill of the prompt tokens not already computed, "
    "assuming a perfect unbounded prefix cache shared by the whole cluster (a segment of the "
    "context tree, e.g. a shared system prompt, earlier context of the same workflow or a "
    "re-sent output, is prefilled once ever), priced at full max_num_batched_tokens steps incl. "
    "attention over the cached context] + [decode of every output token at the largest decode "
    "batch that fits in the KV pool], in instance-seconds from the cost model. Capacity = "
    "number of instances x 1 instance-second per second. Arrival rate = (n-1) / (last arrival "
    "- first arrival). Load 1.0 = a cluster that could just keep up if it batched perfectly "
    "and never evicted; the measure is independent of the cache, routing, admission and "
    "fairness policy."
)


def workflow_works(workload: Workload, cost_model: CostModel) -> list[float]:
    """Instance-seconds of GPU work of each workflow (OFFERED_LOAD_DEFINITION), list order.

    A segment is computed once: a call prefills only the segments of its prompt path that no
    earlier call (in list order) computed; decoded outputs mark their ``output_segment``
    computed. The total does not depend on the order: prefilling segment s always attends to
    the same start_tokens(s) earlier tokens, whichever call pays for it.
    """
    tree = workload.tree
    computed = bytearray(len(tree))
    works: list[float] = []
    for wf in workload.workflows:
        work = 0.0
        for call in wf.calls:
            seg = call.prompt_segment
            while seg != ROOT and not computed[seg]:
                computed[seg] = 1
                seg = tree.parent(seg)
            cached = tree.end_tokens(seg) if seg != ROOT else 0
            work += cost_model.call_work_seconds(call.input_tokens - cached, cached,
                                                 call.output_tokens)
            if call.output_segment != ROOT:
                computed[call.output_segment] = 1
        works.append(work)
    return works


def workload_work_seconds(workload: Workload, cost_model: CostModel) -> float:
    """Total instance-seconds of GPU work of the workload (OFFERED_LOAD_DEFINITION)."""
    return sum(workflow_works(workload, cost_model))


def arrival_rate_per_s(workload: Workload) -> float:
    """Workflows per second over the arrival window: (n - 1) / (last - first arrival)."""
    times = sorted(w.arrival_s for w in workload.workflows)
    if len(times) < 2 or times[-1] <= times[0]:
        return float("inf")
    return (len(times) - 1) / (times[-1] - times[0])


def offered_load(workload: Workload, cost_model: CostModel, n_instances: int) -> float:
    """Offered load of the workload as timed (OFFERED_LOAD_DEFINITION); inf when every
    workflow arrives at the same instant."""
    if not workload.workflows:
        return 0.0
    mean_work = workload_work_seconds(workload, cost_model) / len(workload.workflows)
    rate = arrival_rate_per_s(workload)
    return rate * mean_work / cost_model.capacity_instance_seconds_per_s(n_instances)


def rate_for_load(workload: Workload, cost_model: CostModel, n_instances: int,
                  load: float) -> float:
    """Workflow arrival rate (per s) at which the workload offers ``load``."""
    if not load > 0:
        raise ValueError(f"load must be > 0, got {load}")
    if not workload.workflows:
        raise ValueError("workload has no workflows")
    mean_work = workload_work_seconds(workload, cost_model) / len(workload.workflows)
    if mean_work <= 0:
        raise ValueError("workload has no GPU work")
    return load * cost_model.capacity_instance_seconds_per_s(n_instances) / mean_work


def arrivals_for_load(workload: Workload, cost_model: CostModel, n_instances: int,
                      load: float, seed: int = 0) -> Workload:
    """Copy of ``workload`` with seeded Poisson arrivals (first at 0) at ``rate_for_load``;
    noisy tenants' workflows are then bunched into bursts (tenants.apply_noisy_bursts)."""
    rate = rate_for_load(workload, cost_model, n_instances, load)
    arrivals = poisson_arrivals(len(workload.workflows), rate, seed)
    return apply_noisy_bursts(with_arrivals(workload, arrivals), seed)
