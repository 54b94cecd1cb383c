"""Settings per environment: ``dev`` (embedded defaults), ``test``, ``production``."""
