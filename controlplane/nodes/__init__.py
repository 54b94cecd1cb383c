"""GPU nodes: registration, token auth, heartbeats over a websocket, the stale-node sweep."""
