"""API keys: hashed at rest, constant-time checks, revoked/expired keys never authenticate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane import credentials
from controlplane.tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant() -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


def test_only_prefix_and_digest_are_stored(tenant: Tenant) -> None:
    key, secret = ApiKey.issue(tenant, "agents")
    row = ApiKey.objects.values().get(pk=key.pk)
    assert secret not in {str(v) for v in row.values()}
    assert row["key_hash"] == credentials.digest_secret(secret)
    assert secret.startswith(f"sk_{row['prefix']}_")
    assert key.display_prefix == f"sk_{row['prefix']}_..."


def test_the_issued_secret_authenticates(tenant: Tenant) -> None:
    key, secret = ApiKey.issue(tenant, "agents")
    found = ApiKey.authenticate(secret)
    assert found is not None and found.pk == key.pk and found.tenant == tenant
    assert found.last_used_at is not None


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # right prefix, wrong body
    lambda s: "nt" + s[2:],                               # a node token's shape
    lambda s: s.split("_", 2)[2],                         # body only
    lambda s: "",
])
def test_wrong_secrets_do_not_authenticate(tenant: Tenant, mangle: object) -> None:
    _key, secret = ApiKey.issue(tenant, "agents")
    assert ApiKey.authenticate(mangle(secret)) is None  # type: ignore[operator]


def test_a_revoked_key_never_authenticates(tenant: Tenant) -> None:
    key, secret = ApiKey.issue(tenant, "agents")
    key.revoke()
    assert ApiKey.authenticate(secret) is None
    key.refresh_from_db()
    assert key.is_revoked


def test_expired_keys_and_inactive_tenants_do_not_authenticate(tenant: Tenant) -> None:
    expired, expired_secret = ApiKey.issue(tenant, "old")
    expired.expires_at = timezone.now() - timedelta(seconds=1)
    expired.save()
    assert ApiKey.authenticate(expired_secret) is None

    _key, secret = ApiKey.issue(tenant, "live")
    tenant.is_active = False
    tenant.save()
    assert ApiKey.authenticate(secret) is None


def test_scopes_are_checked_and_validated(tenant: Tenant) -> None:
    _key, secret = ApiKey.issue(tenant, "gateway-only", scopes=["inference"])
    assert ApiKey.authenticate(secret, scope="inference") is not None
    assert ApiKey.authenticate(secret, scope="admin") is None
    with pytest.raises(ValidationError) as excinfo:
        ApiKey.issue(tenant, "bad", scopes=["root"])
    assert "scopes" in excinfo.value.message_dict
    assert "root" in excinfo.value.message_dict["scopes"][0]


def test_comparison_is_constant_time(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest comparison goes through hmac.compare_digest, never ==."""
    calls: list[tuple[str, str]] = []
    real = credentials.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(credentials.hmac, "compare_digest", spy)
    key, secret = ApiKey.issue(tenant, "agents")
    assert ApiKey.authenticate(secret) is not None
    assert ApiKey.authenticate(secret[:-1] + "x") is None
    assert len(calls) == 2
    assert all(stored == key.key_hash for _presented, stored in calls)


def test_secrets_are_unique_and_high_entropy() -> None:
    issued = {credentials.issue_secret("sk").plaintext for _ in range(200)}
    assert len(issued) == 200
    assert all(len(s.split("_", 2)[2]) >= 43 for s in issued)  # 32 random bytes, urlsafe
