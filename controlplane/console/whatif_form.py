"""The console's what-if form: the browser's strings parsed, then checked by the REST API's own
input model (``controlplane.api.admin_whatif.WhatIfIn``) and by ``jobs.create_run``, so the
console and ``POST /api/admin/whatif`` accept exactly the same runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone
from pydantic import ValidationError as PydanticValidationError

from controlplane.tenants.models import Tenant
from nodeagent.sim.profiles import PROFILES
from plugins.named_sets import POLICY_SETS

DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_POLICIES = "active, saga, baseline"
FIELD_OF = {"since": "since", "until": "until", "tenants": "tenants", "policies": "policies",
            "loads": "loads", "cluster": "cluster_mode", "gpus": "gpus", "profile": "profile"}
"""The API's (or the job builder's) field name -> this form's field."""

_WHEN_FORMAT = "%Y-%m-%dT%H:%M"


def form_field(where: list[str]) -> str | None:
    """This form's field for an API field path (``["cluster", "profile"]``, ``["loads", "0"]``)."""
    if where[0] == "cluster" and len(where) > 1:
        return FIELD_OF.get(where[1], "cluster_mode")
    return FIELD_OF.get(where[0])


def _utc_input(label: str, help_text: str, required: bool = True) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label, help_text=help_text, required=required,
        input_formats=[_WHEN_FORMAT, "%Y-%m-%dT%H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 60},
                                   format=_WHEN_FORMAT))


class WhatIfForm(forms.Form):
    since = _utc_input("From (UTC)", "start of the recorded window to replay")
    until = _utc_input("To (UTC)", "end of the window (empty: now, to the second)",
                       required=False)
    tenants = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        help_text="the tenants whose traffic is replayed (none ticked: every tenant)")
    policies = forms.CharField(
        max_length=2000, initial=DEFAULT_POLICIES,
        widget=forms.TextInput(attrs={"size": 48}),
        help_text="comma-separated policy sets; the first is the reference for speedups. "
        "active = what ran live (its swaps replayed at their times); named sets: "
        + ", ".join(POLICY_SETS) + "; or NAME=EVICTION:ROUTING:ADMISSION:FAIRNESS")
    loads = forms.CharField(max_length=200, initial="1", help_text="comma-separated load "
                            "points: the recorded arrival rate times each (1 = as recorded)")
    cluster_mode = forms.ChoiceField(
        label="Cluster", initial="as-recorded", widget=forms.RadioSelect,
        choices=[("as-recorded", "as recorded: the nodes that served the window"),
                 ("fixed", "fixed: GPUs of one profile")])
    gpus = forms.IntegerField(required=False, label="GPUs", min_value=1,
                              help_text="with a fixed cluster: a multiple of the profile's "
                              "tensor parallelism")
    profile = forms.ChoiceField(required=False, choices=[("", "-")] + [
        (name, name) for name in PROFILES], help_text="with a fixed cluster")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        now = timezone.now().astimezone(UTC).replace(second=0, microsecond=0, tzinfo=None)
        kwargs.setdefault("initial", {"since": now - DEFAULT_WINDOW})
        super().__init__(*args, **kwargs)
        self.fields["tenants"].choices = [(t.slug, t.slug) for t in
                                          Tenant.objects.order_by("slug")]

    @staticmethod
    def _utc(value: datetime | None) -> datetime | None:
        """The inputs are UTC wall times (the page says so), whatever the server's zone."""
        return None if value is None else value.replace(tzinfo=UTC)

    def _split(self, name: str) -> list[str]:
        return [part.strip() for part in self.cleaned_data.get(name, "").split(",")
                if part.strip()]

    def api_body(self) -> dict[str, Any] | None:
        """The request body ``WhatIfIn`` validates, or None (errors added) when it refuses."""
        from controlplane.api.admin_whatif import WhatIfIn

        data = self.cleaned_data
        loads: list[float] = []
        for text in self._split("loads"):
            try:
                loads.append(float(text))
            except ValueError:
                self.add_error("loads", f"{text!r} is not a number")
                return None
        cluster: dict[str, Any] = {"mode": data.get("cluster_mode") or "as-recorded"}
        if data.get("gpus") is not None:
            cluster["gpus"] = data["gpus"]
        if data.get("profile"):
            cluster["profile"] = data["profile"]
        body = {"since": self._utc(data.get("since")), "until": self._utc(data.get("until")),
                "tenants": list(data.get("tenants") or []), "policies": self._split("policies"),
                "loads": loads or [1.0], "cluster": cluster}
        try:
            return WhatIfIn.model_validate(body).model_dump()
        except PydanticValidationError as exc:
            for error in exc.errors():
                where = [str(p) for p in error["loc"]]
                target = form_field(where)
                self.add_error(target if target in self.fields else None,
                               f"{'.'.join(where)}: {error['msg']}")
            return None

    def job_error(self, field: str, message: str) -> None:
        """A refusal from ``jobs.create_run`` (empty window, unknown set, ...), on its field."""
        target = form_field(field.split("."))
        prefix = f"{field}: "  # the row already names its field
        self.add_error(target if target in self.fields else None,
                       message[len(prefix):] if message.startswith(prefix) else message)
