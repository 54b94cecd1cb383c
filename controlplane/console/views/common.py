"""What every console page shares: staff-only access and the navigation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

NAV = (
    ("cluster", "Cluster", "console:cluster"),
    ("workflows", "Workflows", "console:workflows"),
    ("templates", "Agent templates", "console:templates"),
    ("tenants", "Tenants", "console:tenants"),
    ("policies", "Policies", "console:policies"),
    ("whatif", "What-if", "console:whatif"),
)
"""The pages of the navigation."""


def staff_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff users only; anyone else is sent to the login page (and back afterwards)."""
    return staff_member_required(view, login_url="admin:login")


def page(request: HttpRequest, template_name: str, section: str, /, **context: Any
         ) -> HttpResponse:
    return render(request, template_name, {"nav": NAV, "section": section, **context})


def as_json(value: Any) -> str:
    """For ``json_script``-style embedding of what a page's script starts from."""
    return json.dumps(value, cls=DjangoJSONEncoder)
