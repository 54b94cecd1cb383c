"""Policies: the catalogue with forms built from each plugin's parameter schema, activation
with a confirmation of what changes, each rollout live per node, rollback, and the history
with its audit trail. Activating and rolling back need the same permission as in the admin."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from controlplane.audit.models import AuditEvent
from controlplane.console.data import activation_data, policy_kinds, rollout_payload
from controlplane.console.forms import ParamField, param_fields, parse_params
from controlplane.console.views.common import page, staff_page
from controlplane.policies.catalogue import registry
from controlplane.policies.models import PolicyActivation
from controlplane.policies.services import (
    ActivationError,
    ConcurrentActivation,
    activate_policy,
    configured_policy,
    current_activation,
    rollback,
)
from plugins.base import PolicyConfigError

PERMISSION = "policies.add_policyactivation"
HISTORY = 50


def _require(request: HttpRequest) -> None:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied("activating and rolling back policies needs the "
                               f"{PERMISSION} permission")


def _catalogue(errors: dict[tuple[str, str], list[ParamField]] | None = None,
               opened: frozenset[tuple[str, str]] = frozenset()) -> list[dict[str, Any]]:
    """Per kind: its installed policies with their forms, what is in force, the latest
    activation's rollout (which, when it failed, is not what is in force)."""
    kinds = []
    infos = registry().infos()
    for kind in policy_kinds():
        in_force = current_activation(kind)
        latest = PolicyActivation.objects.newest(kind)
        entries = []
        for info in (i for i in infos if i.kind == kind):
            values = in_force.policy.params if (
                in_force and in_force.policy.plugin_name == info.name) else None
            fields = (errors or {}).get((kind, info.name)) or param_fields(
                info.params_schema(), values)
            entries.append({"name": info.name, "version": info.version, "summary": info.summary,
                            "requires_oracle": info.requires_oracle, "fields": fields,
                            "open": (kind, info.name) in (errors or {})
                            or (kind, info.name) in opened,
                            "active": in_force is not None
                            and in_force.policy.plugin_name == info.name})
        kinds.append({"kind": kind, "policies": entries,
                      "in_force": activation_data(in_force) if in_force else None,
                      "latest": rollout_payload(latest.pk) if latest else None,
                      "can_roll_back": _rollback_target(in_force) is not None})
    return kinds


def _rollback_target(in_force: PolicyActivation | None) -> PolicyActivation | None:
    from controlplane.policies.models import RolloutStatus

    previous = in_force.previous if in_force is not None else None
    while previous is not None and previous.rollout == RolloutStatus.FAILED:
        previous = previous.previous
    return previous


def _history() -> tuple[list[dict[str, Any]], list[AuditEvent]]:
    rows = PolicyActivation.objects.select_related("policy").order_by("-id")[:HISTORY]
    audit = AuditEvent.objects.filter(action__startswith="policy.").order_by("-id")[:HISTORY]
    return [activation_data(a) for a in rows], list(audit)


def _opened(request: HttpRequest) -> frozenset[tuple[str, str]]:
    """``?open=kind:name,...`` (the what-if page's "roll out" links): those policies' forms
    are shown open, ready to activate."""
    pairs = (part.split(":", 1) for part in request.GET.get("open", "").split(",") if ":" in part)
    return frozenset((kind.strip(), name.strip()) for kind, name in pairs)


def _policies_page(request: HttpRequest, errors: dict[tuple[str, str], list[ParamField]]
                   | None = None, status: int = 200) -> HttpResponse:
    history, audit = _history()
    kinds = _catalogue(errors, _opened(request))
    response = page(request, "console/policies.html", "policies", kinds=kinds,
                    rollouts=[k["latest"] for k in kinds if k["latest"]], history=history,
                    audit=audit, can_change=request.user.has_perm(PERMISSION))
    response.status_code = status
    return response


@staff_page
def policies(request: HttpRequest) -> HttpResponse:
    return _policies_page(request)


@staff_page
@require_POST
def activate(request: HttpRequest) -> HttpResponse:
    """Validate the form and show what the activation changes (``confirm_activation`` does
    it)."""
    _require(request)
    kind, name = request.POST.get("kind", ""), request.POST.get("name", "")
    info = next((i for i in registry().infos() if i.kind == kind and i.name == name), None)
    if info is None:
        return HttpResponseBadRequest(f"no installed {kind} policy {name!r}")
    fields = param_fields(info.params_schema())
    params, parsed = parse_params(fields, request.POST)
    if parsed:
        try:
            configured = configured_params(kind, name, params)
        except PolicyConfigError as exc:
            target = next((f for f in fields if f.name == (exc.field or "").split(".")[0]),
                          None)
            if target is None:
                messages.error(request, str(exc))
            else:
                target.error = str(exc)
            parsed = False
    if not parsed:
        return _policies_page(request, {(kind, name): fields}, status=422)
    current = current_activation(kind)
    return page(request, "console/policy_confirm.html", "policies", kind=kind, info=info,
                params=configured, params_json=json.dumps(params),
                reason=request.POST.get("reason", "")[:500], current=current,
                changes=_changes(current, name, configured))


def configured_params(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The plugin's normalised params (defaults filled in); raises PolicyConfigError."""
    from controlplane.policies.catalogue import validate_policy

    return validate_policy(kind, name, params)[0]


def _changes(current: PolicyActivation | None, name: str, params: dict[str, Any]
             ) -> list[dict[str, Any]]:
    """What the activation changes, parameter by parameter."""
    if current is None:
        before: dict[str, Any] = {}
        before_name = None
    else:
        before, before_name = current.policy.params, current.policy.plugin_name
    rows = [{"what": "policy", "before": before_name or "none", "after": name,
             "changed": before_name != name}]
    same_plugin = before_name == name
    for key in sorted(set(params) | (set(before) if same_plugin else set())):
        old = before.get(key) if same_plugin else None
        rows.append({"what": key, "before": json.dumps(old) if same_plugin else "-",
                     "after": json.dumps(params.get(key)),
                     "changed": not same_plugin or old != params.get(key)})
    return rows


@staff_page
@require_POST
def confirm_activation(request: HttpRequest) -> HttpResponse:
    """The confirmation page's button: the params it showed, activated."""
    _require(request)
    kind, name = request.POST.get("kind", ""), request.POST.get("name", "")
    try:
        params = json.loads(request.POST.get("params", "{}"))
    except json.JSONDecodeError:
        return HttpResponseBadRequest("params: not JSON")
    if not isinstance(params, dict):
        return HttpResponseBadRequest("params: not an object")
    try:
        with transaction.atomic():
            policy = configured_policy(kind, name, params, request.user)
            activation = activate_policy(policy, actor=request.user,
                                         reason=request.POST.get("reason", "")[:500])
    except (ConcurrentActivation, DjangoValidationError) as exc:
        messages.error(request, f"not activated: {exc}")
        return redirect("console:policies")
    return redirect("console:activation", activation_id=activation.pk)


@staff_page
@require_POST
def roll_back(request: HttpRequest) -> HttpResponse:
    """Without ``confirm``, show what a rollback changes; with it, roll back."""
    _require(request)
    kind = request.POST.get("kind", "")
    if kind not in policy_kinds():
        return HttpResponseBadRequest(f"kind: unknown policy kind {kind!r}")
    current = current_activation(kind)
    target = _rollback_target(current)
    if current is None or target is None:
        messages.error(request, f"no earlier {kind} activation to roll back to")
        return redirect("console:policies")
    if request.POST.get("confirm") != "yes":
        return page(request, "console/rollback_confirm.html", "policies", kind=kind,
                    current=current, target=target,
                    changes=_changes(current, target.policy.plugin_name, target.policy.params))
    try:
        activation = rollback(kind, actor=request.user,
                              reason=request.POST.get("reason", "")[:500])
    except ActivationError as exc:
        messages.error(request, str(exc))
        return redirect("console:policies")
    return redirect("console:activation", activation_id=activation.pk)


@staff_page
def activation(request: HttpRequest, activation_id: int) -> HttpResponse:
    rollout = rollout_payload(activation_id)
    if rollout is None:
        raise Http404(f"no activation {activation_id}")
    audit = AuditEvent.objects.filter(object_type="policies.policyactivation",
                                      object_id=str(activation_id)).order_by("id")
    return page(request, "console/activation.html", "policies", rollout=rollout,
                rollouts=[rollout], audit=audit)
