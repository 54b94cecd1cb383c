"""Built-in policies: eviction, routing, admission and fairness, each honest to its source."""
