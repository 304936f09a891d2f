"""Which materials each kind of application needs, and the finding for one that is missing.

The one home of both facts: `rules/materials.toml` `[required]` (shipped, editable by the
operator) over the defaults below, which equal it (CONTRACTS.md "Materials").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailbot.config import ConfigError, load_rule_settings
from mailbot.findings import Finding
from mailbot.intake.attachments import material_settings, name_materials
from mailbot.intake.facts import MATERIALS, MessageFacts
from mailbot.rules.engine import Rule
from mailbot.rules.view import CaseView

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


# ---------------------------------------------------------------------------------------------
# the rule: required materials per kind, with the ID scans given to the roles they count for

ID_ROLES: tuple[str, ...] = ("legal_rep_id", "handler_id")
ROLE_NAME_KEYS = {"legal_rep_id": "legal_rep_name", "handler_id": "handler_name"}


def _norm(text: str | None) -> str:
    return unicodedata.normalize("NFKC", text or "").lower().replace(" ", "").replace("\u3000", "")


@dataclass
class IdRoles:
    """The materials each attachment counts for once ID scans are given their roles."""

    materials: list[tuple[str, ...]] = field(default_factory=list)  # one per attachment
    inferred: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (file, roles)

    @property
    def present(self) -> set[str]:
        return {m for ms in self.materials for m in ms}


def id_roles(view: CaseView, naming: Mapping[str, Any] | None = None) -> IdRoles:
    """Which ID role(s) each ID scan counts for.

    A scan named after the legal representative or the handler (吴堃身份证.jpg, the names
    from the form) counts for that role; one person in both roles, or a name saying both roles
    (法人及经办人身份证.pdf), covers both; a scan naming neither role nor person (身份证.jpg)
    counts for whichever ID is otherwise missing and is reported as a guess.
    """
    cfg = material_settings(naming)
    by_words = {**cfg, "generic_id": {"keywords": [], "materials": []}}
    people = {role: _norm(view.form.get(key)) for role, key in ROLE_NAME_KEYS.items()}
    result = IdRoles()
    generic: list[int] = []
    for i, att in enumerate(view.attachments):
        mats = tuple(att.materials)
        if not set(mats) & set(ID_ROLES):
            result.materials.append(mats)
            continue
        rest = tuple(m for m in mats if m not in ID_ROLES)
        name = _norm(att.filename.rsplit("/", 1)[-1])
        roles = {role for role, person in people.items() if len(person) >= 2 and person in name}
        if not roles:
            roles = set(ID_ROLES) & set(name_materials(att.filename, by_words))
        if not roles:
            generic.append(i)
            result.materials.append(rest)
            continue
        result.materials.append(tuple(m for m in MATERIALS if m in set(rest) | roles))
    covered = result.present
    wanted = [r for r in ID_ROLES if r not in covered]
    for n, i in enumerate(generic):
        if not wanted:
            break
        take = tuple(wanted) if n == len(generic) - 1 else (wanted[0],)
        wanted = [r for r in wanted if r not in take]
        rest = set(result.materials[i])
        result.materials[i] = tuple(m for m in MATERIALS if m in rest | set(take))
        result.inferred.append((view.attachments[i].filename, take))
    result.materials = [ms or ("other",) for ms in result.materials]
    return result


def id_scan_inferred(filename: str, roles: tuple[str, ...]) -> Finding:
    return Finding("id_scan_inferred", "warn",
                   f"{filename}: an ID scan naming no role or person, counted as "
                   + " and ".join(roles), {"filename": filename, "roles": list(roles)})


class MaterialsRule(Rule):
    name = "materials"
    description = "every material the kind of application needs is there (ID scans by role)"
    codes = ("missing_material", "id_scan_inferred")
    defaults: Mapping[str, Any] = {"id_scan_roles": True}

    @staticmethod
    def file_params(settings: Mapping[str, Any]) -> dict[str, Any]:
        """[required] and the naming keywords live in rules/materials.toml."""
        return {"required": required_materials(settings),
                "naming": material_settings(settings)}

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        required = params.get("required") or REQUIRED_MATERIALS
        if params.get("id_scan_roles", True):
            roles = id_roles(view, params.get("naming"))
            present, inferred = roles.present, roles.inferred
        else:
            present, inferred = view.materials_present, []
        found = [missing_material(m) for m in missing_of(view.kind, present, required)]
        return found + [id_scan_inferred(f, r) for f, r in inferred]
