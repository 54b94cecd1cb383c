"""Bundled demo workload data (see PROVENANCE.md); a package so that wheels ship it."""
