"""Live SLO accounting: isolated time of every workflow, per-tenant SLO series, metrics."""
