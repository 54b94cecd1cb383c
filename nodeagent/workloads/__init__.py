"""Agent workloads: data model, trace loaders, synthetic generators, tenants and offered load."""
