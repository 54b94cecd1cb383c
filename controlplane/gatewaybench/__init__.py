"""``saga bench-gateway``: what the gateway adds to a call, measured against the node itself.

The control plane and a simulated node run as separate processes on loopback; the same calls are
sent straight to the node and through the gateway in alternating batches, so machine noise hits
both sides alike.
"""
