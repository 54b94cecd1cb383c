"""Tests of the policy layer (plugins/)."""
