"""Tests of nodeagent.workloads."""
