"""SPDX license expressions: parsing and validation (the license engine's classes are in
``pipeline.audit.licenses``)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def licensing():
    """The SPDX license list of ``license-expression`` (loaded once: it takes a moment)."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def validate_spdx(value: str) -> str:
    """Accept a valid SPDX license expression (``LicenseRef-*`` allowed), else raise ValueError."""
    value = value.strip()
    if not value:
        raise ValueError("license must not be empty; use an SPDX expression such as 'CC-BY-SA-4.0'")
    info = licensing().validate(value)
    errors = [e for e in info.errors if "LicenseRef-" not in e]
    if errors:
        raise ValueError(
            f"{value!r} is not a valid SPDX license expression ({'; '.join(errors)}); "
            "use identifiers from https://spdx.org/licenses/ joined with AND / OR / WITH, "
            "or 'LicenseRef-<name>' for a license with no SPDX id"
        )
    return value
