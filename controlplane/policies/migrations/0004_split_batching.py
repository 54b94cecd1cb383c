"""Two changes to the stored policies, with their data:

1. The ``batching`` kind is split into ``routing`` (the gateway's: where a call goes, work
   stealing) and ``admission`` (the nodes': the order of a node's waiting calls). Each batching
   Policy row becomes the routing policy of the same name (its ``admission_band`` removed) and
   gets an admission counterpart: the admission policy that was the batching policy's own
   admission half (``plugins.named_sets.LEGACY_ADMISSION``, copied here as migrations must not
   change with the code), with ``admission_band`` if it was set. Each batching activation becomes
   a routing activation and gets an admission activation next to it, in the same order, so both
   chains keep the history (actor, reason, time, rollback flag, rollout). What each node had
   acknowledged for ``batching`` is its admission state now.
2. Tenant-scoped activations are removed: no host ever applied them (every host runs one policy
   per kind for all tenants; tenants differ by weight, SLO and quotas). Their audit events stay.
"""

from django.db import migrations, models

LEGACY_ADMISSION = {
    "round-robin": "priority",
    "least-loaded": "priority",
    "session-affinity": "priority",
    "prefix-aware": "lpm",
    "saga": "saga",
}
ADMISSION_PARAMS = ("admission_band",)


def split_batching(apps, schema_editor):  # noqa: ANN001, ANN201 (Django's migration signature)
    Policy = apps.get_model("policies", "Policy")
    PolicyActivation = apps.get_model("policies", "PolicyActivation")
    NodeRollout = apps.get_model("policies", "NodeRollout")
    NodePolicyState = apps.get_model("nodes", "NodePolicyState")

    # Tenant-scoped chains first, newest link first (each link protects its predecessor).
    for activation in PolicyActivation.objects.exclude(scope_key="cluster").order_by("-id"):
        activation.delete()

    counterpart: dict[int, int] = {}  # batching policy id -> its admission policy id
    for policy in Policy.objects.filter(kind="batching").order_by("id"):
        name = LEGACY_ADMISSION.get(policy.plugin_name, "priority")
        params = {k: v for k, v in policy.params.items() if k in ADMISSION_PARAMS}
        same = Policy.objects.filter(kind="admission", plugin_name=name, params=params).first()
        if same is None:
            latest = (Policy.objects.filter(kind="admission", plugin_name=name)
                      .aggregate(models.Max("version"))["version__max"])
            same = Policy.objects.create(
                kind="admission", plugin_name=name, params=params, version=(latest or 0) + 1,
                plugin_version="1.0", created_by_id=policy.created_by_id,
                description=f"admission half of batching:{policy.plugin_name} "
                            f"v{policy.version}"[:200])
        counterpart[policy.pk] = same.pk
        policy.kind = "routing"
        policy.params = {k: v for k, v in policy.params.items() if k not in ADMISSION_PARAMS}
        policy.save(update_fields=["kind", "params"])

    previous_admission = None
    for activation in PolicyActivation.objects.filter(kind="batching").order_by("id"):
        admission = PolicyActivation.objects.create(
            kind="admission", scope="cluster", scope_key="cluster",
            policy_id=counterpart[activation.policy_id], previous=previous_admission,
            is_rollback=activation.is_rollback, activated_by_id=activation.activated_by_id,
            actor=activation.actor, reason=activation.reason, rollout=activation.rollout,
            rollout_settled_at=activation.rollout_settled_at)
        PolicyActivation.objects.filter(pk=admission.pk).update(
            activated_at=activation.activated_at)
        for answer in NodeRollout.objects.filter(activation=activation):
            NodeRollout.objects.create(activation=admission, node_id=answer.node_id,
                                       status=answer.status, error=answer.error)
        NodePolicyState.objects.filter(kind="batching", activation=activation).update(
            kind="admission", activation=admission)
        activation.kind = "routing"
        activation.save(update_fields=["kind"])
        previous_admission = admission
    # The routing kind is the gateway's: its activations are not the nodes' to answer.
    NodeRollout.objects.filter(activation__kind="routing").delete()
    NodePolicyState.objects.filter(kind="batching").update(kind="admission")


class Migration(migrations.Migration):
    """Data only: PostgreSQL does not alter a table with deferred constraint checks pending in
    the same transaction, so the schema change is the next migration."""

    dependencies = [
        ("nodes", "0006_node_load_history"),
        ("policies", "0003_activation_rollout"),
    ]

    operations = [
        migrations.RunPython(split_batching, migrations.RunPython.noop, elidable=False),
    ]
