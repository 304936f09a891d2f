"""Findings: what a check found, in the shape the replies, the rules and `inspect` share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["reject", "missing", "warn"]
SEVERITIES: tuple[str, ...] = ("reject", "missing", "warn")


@dataclass(frozen=True)
class Finding:
    """One fact a check found: a stable code, how bad it is, a one-line English detail.

    `facts` carries the values the reply templates need (a material name, a CN, a serial);
    it never holds key material.
    """

    code: str
    severity: Severity
    detail: str
    facts: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def blocks(self) -> bool:
        """`warn` never blocks approval; `reject` and `missing` do."""
        return self.severity != "warn"

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "detail": self.detail}
