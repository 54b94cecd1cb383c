"""Policy configurations and their activation history (audit and rollback come from the data)."""
