"""URLs as they may be shown: credentials and token-like query strings removed.

Everything that logs or records a URL (provenance, cards, errors) goes through ``redact_url``.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Drop user:password@ and query strings that look like tokens from a URL."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = parts.query
    if any(k in query.lower() for k in ("token", "key", "signature", "secret", "password", "credential")):
        query = "REDACTED"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
