"""The schema half of the routing / admission split (``0004_split_batching``): the kinds'
choices, and activations without a scope (cluster-wide only)."""

from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):

    dependencies = [
        ("policies", "0004_split_batching"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="policyactivation", name="activation_one_chain_start_per_scope"),
        migrations.RemoveConstraint(
            model_name="policyactivation", name="activation_tenant_matches_scope"),
        migrations.RemoveIndex(
            model_name="policyactivation",
            name="policies_po_kind_893aab_idx",
        ),
        migrations.RemoveField(model_name="policyactivation", name="scope"),
        migrations.RemoveField(model_name="policyactivation", name="tenant"),
        migrations.RemoveField(model_name="policyactivation", name="scope_key"),
        migrations.AlterField(
            model_name="policy", name="kind",
            field=models.CharField(choices=[
                ("eviction", "Eviction"), ("routing", "Routing (gateway)"),
                ("admission", "Admission"), ("fairness", "Fairness")], max_length=16)),
        migrations.AlterField(
            model_name="policyactivation", name="kind",
            field=models.CharField(choices=[
                ("eviction", "Eviction"), ("routing", "Routing (gateway)"),
                ("admission", "Admission"), ("fairness", "Fairness")], editable=False,
                max_length=16)),
        migrations.AddIndex(
            model_name="policyactivation",
            index=models.Index(fields=["kind", "-id"], name="policies_po_kind_chain_idx"),
        ),
        migrations.AddConstraint(
            model_name="policyactivation",
            constraint=models.UniqueConstraint(
                condition=Q(previous__isnull=True), fields=("kind",),
                name="activation_one_chain_start_per_kind"),
        ),
    ]
