"""The node agent: the process on each GPU host (``saga node``).

It runs one engine (``sim``: the simulated vLLM instance in real time; ``vllm``: vLLM with SAGA's
scheduler), serves an OpenAI-compatible HTTP API for it, and keeps a control connection to the
control plane: registration, heartbeats with load, and live policy activations.
"""
