"""What intake learns from one message: the shape `inspect`, the case store and the rules share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailbot.findings import Finding

if TYPE_CHECKING:
    from mailbot.pki.csr import CsrReport

KINDS: tuple[str, ...] = ("new", "revoke", "reply", "auto_reply", "bounce", "unrelated")
MATERIALS: tuple[str, ...] = (
    "application_form", "business_licence", "legal_rep_id", "handler_id",
    "crypto_product_cert", "csr", "certificate", "other",
)
FORM_KEYS: tuple[str, ...] = (
    "application_type", "revoke_serial", "applicant_org", "org_code", "email",
    "legal_rep_name", "legal_rep_phone", "legal_rep_id_type", "legal_rep_id_no",
    "handler_name", "handler_phone", "handler_id_type", "handler_id_no",
    "crypto_cert_no", "common_name",
)
BODY_FILENAME = "(body)"


@dataclass
class AttachmentFact:
    """One file of a message (a zip member is its own fact, named "outer.zip/inner").

    `data` holds the decoded bytes only where a later stage needs them (CSR, certificate,
    form); scans keep None so a 30 MB PDF is never held twice.
    """

    filename: str
    content_type: str
    size: int
    materials: list[str] = field(default_factory=list)
    sha256: str = ""
    data: bytes | None = None
    # Why it is what it is ("magic:pdf", "name:营业执照", "parsed:csr", ...), for staff.
    sniffed: str | None = None
    inline: bool = False
    content_id: str | None = None
    # Per-file findings (zip bomb, encrypted member, RAR...): analyse adds them to the message.
    findings: list[Finding] = field(default_factory=list)
    # Fields read from a .docx application form during classification (None: not a readable form).
    form: dict[str, str] | None = None

    def inspect_rows(self) -> list[dict[str, Any]]:
        """One `inspect` row per material this file covers (at least one: `other`)."""
        materials = self.materials or ["other"]
        return [{"filename": self.filename, "material": m, "content_type": self.content_type,
                 "size": int(self.size)} for m in materials]


@dataclass
class MessageFacts:
    """Everything intake decided about one raw message; `to_inspect_json` is the contract."""

    kind: str = "unrelated"
    company: str | None = None
    case_ref: str | None = None
    attachments: list[AttachmentFact] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # the rules fill it in
    csr: CsrReport | None = None
    form: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    # A bounce: the Message-ID, In-Reply-To and References of the message it returns (from
    # its message/rfc822 or text/rfc822-headers part), so one of ours finds its case.
    returned_message_ids: list[str] = field(default_factory=list)
    from_addr: str | None = None
    reply_to: str | None = None
    subject: str = ""
    date: str | None = None
    to_addrs: list[str] = field(default_factory=list)
    return_path: str | None = None
    is_auto_submitted: bool = False
    is_auto_reply: bool = False
    is_bounce: bool = False
    is_list: bool = False  # List-Id / List-Unsubscribe / Precedence: list or bulk
    is_spam: bool = False  # a filter on the way marked it as spam
    is_revocation_hint: bool = False
    is_application_subject: bool = False
    text_body: str = ""
    csr_der: bytes | None = None
    certificate_der: bytes | None = None
    certificates_der: list[bytes] = field(default_factory=list)
    size: int = 0

    @property
    def materials_present(self) -> set[str]:
        return {m for a in self.attachments for m in a.materials}

    @property
    def is_automatic(self) -> bool:
        """Never answer these (RFC 3834): auto replies and bounces."""
        return self.kind in ("auto_reply", "bounce")

    @property
    def reply_address(self) -> str | None:
        """Where an answer goes: the Reply-To if present, else the From."""
        return self.reply_to or self.from_addr

    @property
    def no_reply_reason(self) -> str | None:
        """Why no answer may go to this message at all (RFC 3834), or why unrelated mail gets
        no notice (list, spam); None when it may be answered."""
        if self.kind == "bounce" or self.is_bounce:
            return "bounce"
        if self.kind == "auto_reply" or self.is_auto_reply:
            return "automatic"
        path = (self.return_path or "").strip().replace(" ", "")
        if path == "<>" or not self.reply_address:
            return "null_sender"
        if self.is_list:
            return "list"
        if self.is_spam:
            return "spam"
        return None

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def csr_json(self) -> dict[str, Any] | None:
        if self.csr is None:
            return None
        c = self.csr
        return {"valid": bool(getattr(c, "valid", False)),
                "algorithm": str(getattr(c, "algorithm", "unknown")),
                "subject": str(getattr(c, "subject", "") or ""),
                "codes": [str(x) for x in (getattr(c, "codes", None) or [])]}

    def to_inspect_json(self) -> dict[str, Any]:
        """The `mailbot inspect --json` object of issue 3 item 10, exactly."""
        rows: list[dict[str, Any]] = []
        for att in self.attachments:
            rows.extend(att.inspect_rows())
        return {
            "kind": self.kind,
            "company": self.company,
            "case_ref": self.case_ref,
            "attachments": rows,
            "missing": list(self.missing),  # set by the rules (rules/materials.py)
            "csr": self.csr_json(),
            "form": {k: str(v) for k, v in self.form.items() if k in FORM_KEYS},
            "findings": [f.to_json() for f in self.findings],
        }
