"""Agent templates, workflows (with their state machine), LLM calls and tool calls."""
