"""The case view: every fact a rule may judge, handed to the rules (they never query a database).

`view_from_facts` makes one from a single message (what `mailbot inspect` judges); the daemon
builds one per case and fills the database part (`database=True` and what it found).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailbot.intake.subject import ApplicationSubject

if TYPE_CHECKING:
    from mailbot.intake.facts import MessageFacts
    from mailbot.pki.csr import CsrReport


@dataclass(frozen=True)
class AttachmentView:
    """One file as the rules see it: its name and the materials intake found it to be."""

    filename: str
    materials: tuple[str, ...]
    content_type: str = ""
    size: int = 0


@dataclass(frozen=True)
class KnownCertificate:
    """A certificate of ours the database knows (for the credit code or the organisation)."""

    serial: str  # hex, as the database keeps it
    org_code: str
    organisation: str
    not_after: datetime | None = None
    revoked: bool = False
    kind: str = "sign"  # sign | enc: a pair is two certificates


@dataclass
class CaseView:
    """What the rules judge: one message (inspect) or a whole case (the daemon).

    Database part: `database` says whether it was looked up at all; rules that need it are
    skipped when it was not, so a single message is never judged on an empty register.
    """

    kind: str = "unrelated"
    subject: str = ""
    subject_info: ApplicationSubject | None = None
    from_addr: str | None = None
    reply_to: str | None = None
    form: dict[str, str] = field(default_factory=dict)
    attachments: list[AttachmentView] = field(default_factory=list)
    csr: CsrReport | None = None
    # The request's subject names when only they are at hand (a recorded case keeps the
    # subject string of its messages' facts, not the report): see `request_names`.
    csr_subject: dict[str, str] | None = None
    certificates: list[bytes] = field(default_factory=list)  # DER attached for revocation
    text: str = ""  # subject and body(ies): key-loss words are looked for here
    # --- from the database (the caller's lookups) ---
    database: bool = False
    known_certificates: list[KnownCertificate] = field(default_factory=list)
    ca_public_keys: list[bytes] = field(default_factory=list)  # 04||X||Y of our CA key(s)
    overrides: set[str] = field(default_factory=set)  # finding codes staff overrode
    key_loss_marked: bool = False  # staff marked the key lost, leaked or damaged
    now: datetime | None = None  # None: the clock's now
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def materials_present(self) -> set[str]:
        return {m for a in self.attachments for m in a.materials}

    @property
    def request_names(self) -> dict[str, str]:
        """The request's subject names ({"CN": …, "O": …}): the kept ones, else the report's."""
        if self.csr_subject is not None:
            return self.csr_subject
        return dict(getattr(self.csr, "subject_fields", None) or {})

    @property
    def sender(self) -> str | None:
        """Who the mail came from (From; Reply-To is where answers go, not who sent it)."""
        return self.from_addr


def view_from_facts(facts: MessageFacts, settings: Any = None) -> CaseView:
    """The view of one message; the database part is left empty (database rules are skipped)."""
    body = facts.text_body or ""
    return CaseView(
        kind=facts.kind,
        subject=facts.subject or "",
        subject_info=ApplicationSubject.parse(facts.subject, settings),
        from_addr=facts.from_addr,
        reply_to=facts.reply_to,
        form={k: str(v) for k, v in (facts.form or {}).items()},
        attachments=[AttachmentView(a.filename, tuple(a.materials or ("other",)),
                                    a.content_type, int(a.size or 0))
                     for a in facts.attachments],
        csr=facts.csr,
        certificates=list(facts.certificates_der
                          or ([facts.certificate_der] if facts.certificate_der else [])),
        text=f"{facts.subject or ''}\n{body}",
    )


def _split_unescaped(text: str, sep: str) -> list[str]:
    """`text` cut at each `sep` not escaped by a backslash (escapes are kept)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_dn(value: str) -> str:
    """An RFC 4514 value without its escapes (`\\,` and the like, and `\\hh` bytes)."""
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i + 1:i + 3]
            if len(pair) == 2 and all(c in string.hexdigits for c in pair):
                out.append(int(pair, 16))
                i += 3
            else:
                out += value[i + 1].encode("utf-8")
                i += 2
            continue
        out += value[i].encode("utf-8")
        i += 1
    return out.decode("utf-8", errors="replace")


def dn_fields(subject: str) -> dict[str, str]:
    """The names of an RFC 4514 subject string (`CN=a,O=b\\, Ltd`), keyed as
    `CsrReport.subject_fields` keys them: a name given twice is joined with "; " in the
    request's own order (the string lists the most specific name first)."""
    fields: dict[str, str] = {}
    if not (subject or "").strip():
        return fields
    for rdn in reversed(_split_unescaped(subject, ",")):
        for atv in _split_unescaped(rdn, "+"):
            key, eq, value = atv.partition("=")
            key = key.strip()
            if not eq or not key:
                continue
            value = _unescape_dn(value)
            fields[key] = f"{fields[key]}; {value}" if key in fields else value
    return fields
