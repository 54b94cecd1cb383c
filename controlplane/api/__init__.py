"""The REST API (django-ninja, OpenAPI 3.1 at /api/openapi.json, offline docs at /api/docs)."""
