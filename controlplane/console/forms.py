"""The console's forms: tenants (validated by the REST API's own input models, so the browser
and the API accept exactly the same values) and policy parameters (built from each plugin's
JSON schema: one input per parameter with its default, description and range)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from controlplane.tenants.models import ApiKeyScope, Tenant

# ------------------------------------------------------------------------------- tenants

TENANT_FIELDS = ("slug", "name", "weight", "slo_slowdown", "slo_percentile",
                 "max_concurrent_workflows", "tokens_per_minute", "is_active")


class TenantForm(forms.Form):
    """Parses the browser's strings; the API's ``TenantIn``/``TenantPatch`` then decide."""

    slug = forms.CharField(max_length=64, help_text="letters, digits, - and _ (how the API "
                           "and the metrics name the tenant)")
    name = forms.CharField(max_length=200)
    weight = forms.FloatField(help_text="fair-share weight, 0.001 to 1000")
    slo_slowdown = forms.FloatField(label="SLO slowdown",
                                    help_text="a workflow meets its SLO when TCT / isolated time "
                                    "is at most this (>= 1)")
    slo_percentile = forms.FloatField(label="SLO percentile",
                                      help_text="share of workflows that must meet it, (0, 100]")
    max_concurrent_workflows = forms.IntegerField(
        required=False, label="Max concurrent workflows", help_text="empty: unlimited")
    tokens_per_minute = forms.IntegerField(required=False, label="Tokens per minute",
                                           help_text="empty: unlimited")
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(self, *args: Any, instance: Tenant | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None:  # also what the disabled slug field submits
            kwargs["initial"] = {f: getattr(instance, f) for f in TENANT_FIELDS}
        super().__init__(*args, **kwargs)
        if instance is not None:
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = "a tenant's slug cannot change"

    def clean(self) -> dict[str, Any]:
        from controlplane.api.admin_tenants import TenantIn, TenantPatch

        data = super().clean()
        # every field that parsed is checked with the API's rules, so all errors show at once
        values = {f: data[f] for f in TENANT_FIELDS if f in data}
        if self.instance is None:
            if values.get("slug") and Tenant.objects.filter(slug=values["slug"]).exists():
                self.add_error("slug", f"tenant {values['slug']!r} exists already")
            _validate(self, TenantIn, values)
        else:
            values.pop("slug", None)
            _validate(self, TenantPatch, values)
        return data

    def save(self) -> Tenant:
        """Create or update the tenant (model validation included); call after is_valid()."""
        tenant = self.instance or Tenant(slug=self.cleaned_data["slug"])
        for name in TENANT_FIELDS:
            if name != "slug":
                setattr(tenant, name, self.cleaned_data[name])
        tenant.full_clean()
        tenant.save()
        return tenant


def _validate(form: forms.Form, model: type[BaseModel], values: dict[str, Any]) -> None:
    """Run the API's input model; each error goes to the field it names."""
    try:
        model.model_validate(values)
    except PydanticValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else None
            if name in form.errors:
                continue  # the field did not parse: its own error says why
            form.add_error(name if name in form.fields else None, error["msg"])


def model_errors(form: forms.Form, exc: DjangoValidationError) -> None:
    """Attach a model's full_clean errors to the form's fields."""
    for name, messages in exc.message_dict.items():
        form.add_error(name if name in form.fields else None, messages)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the key is for, e.g. ci-agents")
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices, widget=forms.CheckboxSelectMultiple,
        initial=[ApiKeyScope.INFERENCE, ApiKeyScope.WORKFLOWS],
        help_text="inference: the /v1 gateway; workflows: the workflow API; admin: everything")
    expires_at = forms.DateTimeField(
        required=False, label="Expires at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="empty: never")

    def clean_expires_at(self) -> Any:
        from django.utils import timezone

        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("must be in the future")
        return value


# ---------------------------------------------------------------------- policy parameters

@dataclass
class ParamField:
    """One parameter of a plugin, as a form input."""

    name: str
    title: str
    description: str
    kind: str  # number, integer, boolean, enum, string, mapping, json
    nullable: bool = False
    default: Any = None
    has_default: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    choices: list[Any] = field(default_factory=list)
    value_kind: str = "number"  # mapping values
    value: Any = None
    error: str = ""

    @property
    def input_name(self) -> str:
        return f"p.{self.name}"

    @property
    def range_text(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.exclusive_minimum is not None:
            parts.append(f"> {self.exclusive_minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.exclusive_maximum is not None:
            parts.append(f"< {self.exclusive_maximum:g}")
        return ", ".join(parts)

    @property
    def html_min(self) -> float | None:
        return self.minimum if self.minimum is not None else self.exclusive_minimum

    @property
    def html_max(self) -> float | None:
        return self.maximum if self.maximum is not None else self.exclusive_maximum

    @property
    def text_value(self) -> str:
        """The value as the input shows it (empty for null)."""
        if self.value is None:
            return ""
        if self.kind == "json":
            return json.dumps(self.value)
        if isinstance(self.value, float):
            return repr(self.value)
        return str(self.value)

    @property
    def mapping_rows(self) -> list[tuple[str, Any]]:
        rows = list((self.value or {}).items()) if isinstance(self.value, dict) else []
        return [*rows, ("", "")]

    @property
    def default_text(self) -> str:
        if not self.has_default:
            return ""
        if self.default is None:
            return "not set"
        return json.dumps(self.default) if isinstance(self.default, dict | list) else str(
            self.default)


def _field_of(name: str, spec: dict[str, Any], value: Any) -> ParamField:
    nullable = False
    options = spec.get("anyOf")
    base = dict(spec)
    if isinstance(options, list):
        non_null = [o for o in options if o.get("type") != "null"]
        nullable = len(non_null) < len(options)
        if len(non_null) == 1:
            base = {**spec, **non_null[0]}
            base.pop("anyOf", None)
    kind = "json"
    value_kind = "number"
    json_type = base.get("type")
    if "enum" in base:
        kind = "enum"
    elif json_type in ("number", "integer", "boolean", "string"):
        kind = json_type
    elif json_type == "object" and isinstance(base.get("additionalProperties"), dict) and (
            base["additionalProperties"].get("type") in ("number", "integer", "string")):
        kind = "mapping"
        value_kind = base["additionalProperties"]["type"]
    return ParamField(
        name=name, title=str(spec.get("title") or name), description=str(
            spec.get("description") or ""), kind=kind, nullable=nullable,
        default=spec.get("default"), has_default="default" in spec,
        minimum=base.get("minimum"), maximum=base.get("maximum"),
        exclusive_minimum=base.get("exclusiveMinimum"),
        exclusive_maximum=base.get("exclusiveMaximum"),
        choices=list(base.get("enum") or []), value_kind=value_kind, value=value)


def param_fields(schema: dict[str, Any], values: dict[str, Any] | None = None
                 ) -> list[ParamField]:
    """One field per property of the plugin's parameter schema, filled with ``values`` (or the
    defaults)."""
    values = values or {}
    out = []
    for name, spec in (schema.get("properties") or {}).items():
        value = values.get(name, spec.get("default"))
        out.append(_field_of(name, spec, value))
    return out


def parse_params(fields: list[ParamField], post: Any) -> tuple[dict[str, Any], bool]:
    """The params a submitted form asks for; each unparseable input gets its field's error
    (range and type rules are the plugin's: it validates what this returns)."""
    params: dict[str, Any] = {}
    ok = True
    for f in fields:
        raw = post.get(f.input_name, "")
        try:
            if f.kind == "boolean":
                f.value = post.get(f.input_name) == "on"
            elif f.kind == "mapping":
                keys = post.getlist(f"{f.input_name}.key")
                values = post.getlist(f"{f.input_name}.value")
                mapping: dict[str, Any] = {}
                for key, text in zip(keys, values, strict=False):
                    key, text = key.strip(), text.strip()
                    if not key and not text:
                        continue
                    if not key:
                        raise ValueError("every value needs a name")
                    mapping[key] = _scalar(text, f.value_kind)
                f.value = mapping
            elif raw.strip() == "":
                if not f.nullable:
                    f.value = f.default
                    if not f.has_default:
                        raise ValueError("required")
                    continue  # the plugin's default
                f.value = None
            elif f.kind == "json":
                f.value = json.loads(raw)
            elif f.kind == "enum":
                f.value = next((c for c in f.choices if str(c) == raw), raw)
            else:
                f.value = _scalar(raw, f.kind)
        except (ValueError, json.JSONDecodeError) as exc:
            f.error = str(exc)
            f.value = raw
            ok = False
            continue
        params[f.name] = f.value
    return params, ok


def _scalar(text: str, kind: str) -> Any:
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    return text
