"""An append-only audit trail of who changed what."""
