"""Which materials each kind of application needs, and the finding for one that is missing.

The one home of both facts: `rules/materials.toml` `[required]` (shipped, editable by the
operator) over the defaults below, which equal it (CONTRACTS.md "Materials").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mailbot.config import ConfigError, load_rule_settings
from mailbot.findings import Finding
from mailbot.intake.facts import MATERIALS, MessageFacts

REQUIRED_MATERIALS: dict[str, tuple[str, ...]] = {
    "new": ("application_form", "business_licence", "legal_rep_id", "handler_id",
            "crypto_product_cert", "csr"),
    "revoke": ("application_form", "business_licence", "legal_rep_id", "handler_id",
               "certificate"),
}


def required_materials(settings: Mapping[str, Any] | None = None) -> dict[str, tuple[str, ...]]:
    """Required materials per kind: `[required]` of rules/materials.toml over the defaults.

    Raises ConfigError naming the bad entry, so a broken rules file is refused at start-up.
    """
    required = dict(REQUIRED_MATERIALS)
    section = ((settings or {}).get("materials") or {}).get("required") or {}
    for kind, names in section.items():
        if kind not in REQUIRED_MATERIALS:
            raise ConfigError(f"rules/materials.toml [required]: unknown kind {kind!r}")
        unknown = [n for n in names if n not in MATERIALS or n == "other"]
        if unknown:
            raise ConfigError(f"rules/materials.toml [required] {kind}: unknown material(s) "
                             + ", ".join(map(repr, unknown)))
        required[kind] = tuple(names)
    return required


def configured_required(rules_dir: str | None = None) -> dict[str, tuple[str, ...]]:
    """The required materials of the rules folder in use (the configuration's rules_dir)."""
    return required_materials(load_rule_settings(rules_dir))


def missing_material(material: str) -> Finding:
    """The finding for one required material that no message of the case has brought."""
    return Finding("missing_material", "missing", f"missing material: {material}",
                   {"material": material})


def missing_of(kind: str, present: Iterable[str],
               required: Mapping[str, tuple[str, ...]] | None = None) -> list[str]:
    """The materials `kind` requires that are not among `present`, in the required order."""
    have = set(present)
    return [m for m in (required or REQUIRED_MATERIALS).get(kind, ()) if m not in have]


def check_materials(facts: MessageFacts,
                    required: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Set `facts.missing` for one message and add a finding per missing material.

    The findings go after what intake found of the message itself and before the request's
    own findings, so `inspect` reads top-down: the mail, its materials, then the CSR.
    """
    req = required or REQUIRED_MATERIALS
    if facts.kind not in req:
        facts.missing = []
        return
    facts.missing = missing_of(facts.kind, facts.materials_present, req)
    found = [f for f in facts.findings if f.code != "missing_material"]
    request = {id(f) for f in (getattr(facts.csr, "findings", None) or [])}
    at = next((i for i, f in enumerate(found)
               if id(f) in request or f.code == "unparseable_message"), len(found))
    found[at:at] = [missing_material(m) for m in facts.missing]
    facts.findings = found
