"""Case numbers (XM-YYYY-NNNN) and our Message-IDs (<XM-YYYY-NNNN.RANDOM@DOMAIN>): one home.

The subject tag `[XM-2026-0007]` (or 【…】) lets a reply join its case; a reply that cites one
of our Message-IDs in In-Reply-To/References joins it whatever the domain (CONTRACTS.md).
"""

from __future__ import annotations

import re
import secrets

# The number itself; the sequence has at least four digits and may grow past 9999.
CASE_REF_TEXT = r"XM-\d{4}-\d{4,}"
CASE_REF = re.compile(r"^XM-(\d{4})-(\d{4,})$")
# The tag in a subject, in ASCII or full-width brackets, any case.
CASE_TAG = re.compile(rf"[\[【]\s*({CASE_REF_TEXT})\s*[\]】]", re.I)
# One of our Message-IDs, found in In-Reply-To / References.
OWN_MESSAGE_ID = re.compile(rf"<\s*({CASE_REF_TEXT})\.[^<>@\s]*@[^<>\s]+>", re.I)


def format_ref(year: int, seq: int) -> str:
    """The case number of the `seq`th case of `year`: XM-2026-0007."""
    return f"XM-{year:04d}-{seq:04d}"


def subject_tag(ref: str) -> str:
    """The tag put in every reply subject: [XM-2026-0007]."""
    return f"[{ref}]"


def make_message_id(ref: str, domain: str) -> str:
    """A fresh Message-ID of ours for a mail about case `ref`."""
    return f"<{ref}.{secrets.token_hex(8)}@{domain}>"


def make_plain_message_id(domain: str) -> str:
    """A fresh Message-ID of ours that names no case (the unrelated notice, the digest)."""
    return f"<mailbot.{secrets.token_hex(10)}@{domain}>"


def ref_in_message_id(message_id: str) -> str | None:
    """The case number carried by one of our Message-IDs, upper-cased; None for others."""
    m = OWN_MESSAGE_ID.search(message_id or "")
    return m.group(1).upper() if m else None


def clean_message_id(value: object) -> str | None:
    """A Message-ID header value as recorded: whitespace folded, the "<...>" part when there
    is one (intake keeps it in the same form), at most 998 characters; None when empty."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if "<" in text and ">" in text.split("<", 1)[1]:
        text = "<" + text.split("<", 1)[1].split(">", 1)[0] + ">"
    return text[:998] or None
