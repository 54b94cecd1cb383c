"""Bad what-if input: one message and the field it is about (the CLI prints the message and
exits 2; the API answers 422 naming the field)."""

from __future__ import annotations


class WhatIfInputError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
