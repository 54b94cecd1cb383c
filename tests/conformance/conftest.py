"""Fixtures of the conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodeagent.sim.profiles import PROFILES


@pytest.fixture(autouse=True)
def _scenario_profiles_are_forgotten() -> Iterator[None]:
    """``cluster_hosts.scenario_profile`` registers each scenario's profile by name (a gateway
    node names it); the registry is the process's, so the test's entries go when it ends."""
    before = dict(PROFILES)
    yield
    PROFILES.clear()
    PROFILES.update(before)
