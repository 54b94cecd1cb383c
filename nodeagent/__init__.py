"""SAGA nodeagent package."""
