"""Tenants (fair-share weight, SLO, quotas) and their hashed API keys."""
