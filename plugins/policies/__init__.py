"""Built-in policies: eviction, batching / routing and fairness, each honest to its source."""
