"""What-if: replay a window of this cluster's recorded traffic under candidate policy sets
(``controlplane.whatif``), watch each task's progress, compare the results side by side and open
the policy rollout for a candidate. Starting and cancelling need the what-if app's permission
and are audited, as over the REST API."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from controlplane.console.views.common import as_json, page, staff_page
from controlplane.console.whatif_form import WhatIfForm
from controlplane.whatif import jobs
from controlplane.whatif.candidates import ACTIVE
from controlplane.whatif.errors import WhatIfInputError
from controlplane.whatif.models import WhatIfRun

PERMISSION = "whatif.add_whatifrun"
RECENT = 20


def _require(request: HttpRequest) -> None:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied(f"starting and cancelling what-if runs needs the {PERMISSION} "
                               "permission")


def state(run: WhatIfRun) -> dict[str, Any]:
    """What the run page draws (and its websocket re-sends): the API's payload, JSON-safe."""
    return json.loads(as_json(jobs.run_payload(run)))


@staff_page
def whatif_list(request: HttpRequest) -> HttpResponse:
    form = WhatIfForm(request.POST or None)
    status = 200
    if request.method == "POST":
        _require(request)
        body = form.api_body() if form.is_valid() else None
        if body is not None:
            spec = jobs.RunSpec(since=body["since"], until=body["until"] or timezone.now(),
                                policies=body["policies"], tenants=body["tenants"],
                                cluster={k: v for k, v in body["cluster"].items()
                                         if v is not None},
                                loads=body["loads"])
            try:
                run = jobs.start(spec, request.user, user=request.user)
            except WhatIfInputError as exc:
                form.job_error(exc.field, exc.message)
            else:
                return redirect("console:whatif_run", run_id=run.pk)
        status = 422
    runs = WhatIfRun.objects.prefetch_related("tasks")[:RECENT]
    response = page(request, "console/whatif.html", "whatif", form=form, runs=runs,
                    can_start=request.user.has_perm(PERMISSION))
    response.status_code = status
    return response


def _rollout_query(candidate: dict[str, Any]) -> str:
    """``?open=kind:name,...`` for the policies page: the candidate's policy per kind."""
    return ",".join(f"{kind}:{name}" for kind, name in candidate["names"].items())


@staff_page
def whatif_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(WhatIfRun, pk=run_id)
    rollouts = [{"name": c["name"], "names": c["names"], "open": _rollout_query(c)}
                for c in run.recording.get("candidates", []) if c["name"] != ACTIVE]
    return page(request, "console/whatif_run.html", "whatif", run=run, initial=state(run),
                rollouts=rollouts, can_start=request.user.has_perm(PERMISSION))


@staff_page
@require_POST
def whatif_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    _require(request)
    run = get_object_or_404(WhatIfRun, pk=run_id)
    if jobs.cancel_audited(run, request.user):
        messages.success(request, f"What-if run #{run.pk} cancelled.")
    else:
        run.refresh_from_db()
        messages.error(request, f"What-if run #{run.pk} has already {run.status}.")
    return redirect("console:whatif_run", run_id=run.pk)


@staff_page
@xframe_options_sameorigin
def whatif_report(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run's self-contained report, framed by the run page (same origin only)."""
    run = get_object_or_404(WhatIfRun, pk=run_id)
    if not run.report_html:
        return HttpResponse("This run has no report yet.", status=409,
                            content_type="text/plain; charset=utf-8")
    return HttpResponse(run.report_html, content_type="text/html; charset=utf-8")
