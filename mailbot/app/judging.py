"""What the cases need to judge a case with the rules: the operator's rules and the CA's key.

One place builds them for every path that records or re-judges a case (the daemon,
`reprocess`, `cases new --from-dir`, `cases edit` and `override`), so all judge alike.
"""

from __future__ import annotations

import logging
from typing import Any

from mailbot.cases.recorder import CaseRecorder
from mailbot.config import Config, load_rule_settings
from mailbot.pki.ca import ca_certificate
from mailbot.pki.errors import PkiError
from mailbot.rules.materials import configured_required

log = logging.getLogger(__name__)


def ca_public_keys(cfg: Config) -> list[bytes]:
    """The CA's public key (04||X||Y) for "signed by this CA"; none before `ca init`."""
    try:
        cert = ca_certificate(cfg)
    except (PkiError, OSError, ValueError):
        return []  # no CA yet: revoke_foreign_certificate cannot judge, and is skipped
    return [bytes(cert.public_key["public_key"].contents)[1:]]


def rule_context(cfg: Config) -> dict[str, Any]:
    """Keyword arguments for the cases' rule evaluation: `settings` and `ca_public_keys`."""
    return {"settings": load_rule_settings(cfg.rules_dir), "ca_public_keys": ca_public_keys(cfg)}


def case_recorder(cfg: Config) -> CaseRecorder:
    """The sink intake is given: cases recorded and judged with the configured rules."""
    return CaseRecorder(configured_required(cfg.rules_dir), **rule_context(cfg))
