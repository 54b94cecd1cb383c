"""``saga fidelity``: the simulator checked against the real vLLM engine on the same traces."""
