"""Which keys of a credentials Secret (or of a clouds.yaml entry) hold secrets, and the
redaction of their values from text.

One rule for every cloud: a key is secret when its name holds one of :data:`SECRET_KEYS`
(``password``, ``application_credential_secret``, ``client_secret``, ``token``,
``secret_access_key``, ``session_token``, a ``private_key`` ...), unless it names an
identifier (it ends in ``_id``: ``access_key_id``, ``application_credential_id``,
``kms_key_id``). Every value held under such a key is kept out of what Lifeboat writes:
logs, Events, status and metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SECRET_KEYS: tuple[str, ...] = ("secret", "password", "passwd", "token", "key")
"""Words that make a key secret, wherever they appear in its name (case-insensitive)."""

IDENTIFIER_SUFFIX = "_id"
"""A key that ends so names an identifier, not a secret (``access_key_id``)."""

STARS = "**********"
"""What a redacted value is shown as."""

_MIN_REDACTED = 4
"""Values shorter than this are not searched for in text (``1`` would star every digit);
no usable credential is this short."""


def is_secret_key(name: str) -> bool:
    """Whether a Secret's or clouds.yaml's key ``name`` holds a secret."""
    lowered = name.lower().replace("-", "_")
    if lowered.endswith(IDENTIFIER_SUFFIX):
        return False
    return any(word in lowered for word in SECRET_KEYS)


def secret_values(document: Any) -> list[str]:
    """Every value held under a secret key anywhere in ``document`` (nested mappings and
    lists are walked; a secret key's whole subtree counts as secret)."""
    found: list[str] = []

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, secret or is_secret_key(str(key)))
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item, secret)
        elif secret and node is not None and not isinstance(node, bool):
            found.append(str(node))

    walk(document, False)
    return found


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every one of ``values`` replaced by stars (longest first, so a secret
    that contains another is starred whole)."""
    for value in sorted({v for v in values if len(v) >= _MIN_REDACTED}, key=len, reverse=True):
        text = text.replace(value, STARS)
    return text
