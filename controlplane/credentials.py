"""Bearer secrets (tenant API keys, node tokens): generation, hashing, constant-time checks.

A secret looks like ``<kind>_<prefix>_<body>``. Only the prefix (to find the row and to show in
the admin) and the SHA-256 of the whole secret are stored: the secret itself is shown once and
can never be read back. SHA-256 rather than a slow password hash is right here because the body
carries 256 bits of randomness: there is nothing to brute-force, and verification stays cheap on
the gateway's hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_CHARS = 8
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A freshly generated secret: ``plaintext`` goes to the user once, the rest is stored."""

    plaintext: str
    prefix: str
    digest: str


def digest_secret(plaintext: str) -> str:
    """Hex SHA-256 of a secret, the only form in which it is stored."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def issue_secret(kind: str) -> IssuedSecret:
    """Generate a new secret of the given kind (``sk`` for API keys, ``nt`` for node tokens)."""
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_CHARS))
    plaintext = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedSecret(plaintext=plaintext, prefix=prefix, digest=digest_secret(plaintext))


def parse_prefix(plaintext: str, kind: str) -> str | None:
    """The lookup prefix of a presented secret, or None when it is not of the expected shape."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or len(parts[1]) != PREFIX_CHARS or not parts[2]:
        return None
    return parts[1]


def secret_matches(plaintext: str, stored_digest: str) -> bool:
    """Compare a presented secret with a stored digest in constant time."""
    return hmac.compare_digest(digest_secret(plaintext), stored_digest)
