"""Tenant validation: clear per-field messages, enforced by the database too."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from controlplane.tenants.models import Tenant

pytestmark = pytest.mark.django_db


def make_tenant(**overrides: object) -> Tenant:
    fields: dict[str, object] = {"slug": "acme", "name": "Acme"}
    fields.update(overrides)
    return Tenant(**fields)


def test_defaults_are_valid_and_describe_the_slo() -> None:
    tenant = make_tenant()
    tenant.full_clean()
    tenant.save()
    assert (tenant.weight, tenant.slo_slowdown, tenant.slo_percentile) == (1.0, 2.0, 95.0)
    assert tenant.slo_label == "p95 <= 2x"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("weight", 0.0, "greater than 0"),
        ("weight", -1.0, "greater than 0"),
        ("slo_slowdown", 0.9, "at least 1.0"),
        ("slo_percentile", 0.0, "(0, 100]"),
        ("slo_percentile", 100.5, "(0, 100]"),
        ("max_concurrent_workflows", -1, "greater than or equal to 0"),
        ("tokens_per_minute", -5, "greater than or equal to 0"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        make_tenant(**{field: value}).full_clean()
    errors = excinfo.value.message_dict
    assert field in errors
    assert any(message in text for text in errors[field])


def test_boundary_values_are_accepted() -> None:
    make_tenant(weight=0.001, slo_slowdown=1.0, slo_percentile=100.0,
                max_concurrent_workflows=0, tokens_per_minute=0).full_clean()


def test_slugs_are_unique() -> None:
    make_tenant().save()
    with pytest.raises(ValidationError) as excinfo:
        make_tenant(name="Other").full_clean()
    assert "slug" in excinfo.value.message_dict


@pytest.mark.parametrize(
    ("field", "value"), [("weight", 0.0), ("slo_slowdown", 0.5), ("slo_percentile", 150.0)]
)
def test_database_constraints_hold_even_without_model_validation(field: str, value: float) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make_tenant(**{field: value}).save()
