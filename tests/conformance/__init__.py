"""The conformance suite: scripted scenarios run against every host of SAGA's policies.

Hosts: the live simulated node (``SimBackend``), vLLM's ``SagaScheduler`` on the real vLLM
scheduler code, the bench cluster (``nodeagent.sim.cluster``) and the gateway (``/v1`` and
``rebalance_homes`` of a live control plane). Node-tier scenarios (a tool pause with retention
then the next call, preemption under KV pressure, admission order with two weighted tenants, a
live policy swap mid-stream) run on the simulated node and vLLM; cluster-tier ones (routing
with a cached home versus an idle node, work stealing of a waiting workflow) on the bench
cluster and the gateway. Every built-in policy joins through one row of ``policies.POLICIES``.

Layout:

- ``scenarios.py``: the scenarios, host-neutral (no Django, no vLLM);
- ``policies.py``: the policy table;
- ``recording.py``: the recording policy (what each policy saw and decided, per host);
- ``compare.py``, ``disagreements.py``: field-by-field comparison, the measured fields'
  tolerances, and the disagreements found (each with a test that fails until it is fixed);
- ``node_hosts.py`` (simulated node), ``vllm_host.py`` (vLLM: imported only under
  ``make test-vllm``), ``cluster_hosts.py`` (bench cluster), ``gateway_host.py`` (gateway);
- tests: ``test_node_scenarios.py``, ``test_cluster_scenarios.py``, ``test_policy_table.py``
  (``make test``) and ``tests/vllm/test_conformance.py`` (``make test-vllm``, which compares
  vLLM with the simulated node).

Run one half::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/pytest tests/conformance
    VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 .venv-vllm/bin/python -m pytest -p no:django \\
        -p no:cacheprovider tests/vllm/test_conformance.py
"""
