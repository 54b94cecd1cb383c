"""Simulated GPU engine: cost model, engine and cluster harness."""
