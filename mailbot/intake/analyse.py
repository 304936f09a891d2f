"""Raw message bytes -> MessageFacts: parse once, decode only what must be read, classify.

Scans (PDF/JPEG/PNG...) are never held decoded: their type comes from a few hundred decoded
bytes, their size and sha256 from a streamed decode. Only the form (.docx), CSRs,
certificates, zips and unknown files are decoded whole, each capped.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
from collections.abc import Callable, Mapping
from typing import Any

from mailbot.findings import Finding
from mailbot.intake.attachments import classify_attachment, find_csr_in_text, sniff_type
from mailbot.intake.classify import (
    SPAM_HEADERS,
    Headers,
    case_ref_from_ids,
    classify,
    is_list_mail,
    is_spam_marked,
)
from mailbot.intake.facts import (
    BODY_FILENAME,
    AttachmentFact,
    MessageFacts,
)
from mailbot.intake.form import extract_form
from mailbot.intake.mime import (
    MAX_TEXT_BYTES,
    ParsedMessage,
    Part,
    decode_bytes,
    html_to_text,
    parse_headers,
    parse_message,
)
from mailbot.intake.subject import ApplicationSubject
from mailbot.pki.csr import check_csr, decode_text_or_der

log = logging.getLogger(__name__)

SCAN_TYPES = frozenset({"pdf", "jpeg", "png", "gif", "bmp", "tiff", "webp"})
MAX_FULL_DECODE = 64 * 1024 * 1024   # beyond this a part is judged by its first bytes only
MAX_ATTACHMENTS = 500
# S/MIME signatures and opaque S/MIME bodies: the certificates inside are the sender's, no material.
SMIME_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature",
                         "application/pkcs7-mime", "application/x-pkcs7-mime")
REPORT_PART_TYPES = ("message/delivery-status", "message/global-delivery-status",
                     "message/disposition-notification", "text/rfc822-headers")
# Cheap gate before a body search for a pasted CSR: PEM armour or a long base64 run.
_CSR_HINT = re.compile(r"-----BEGIN|[A-Za-z0-9+/]{120,}")


# ---------------------------------------------------------------------------------------------
def _headers(pm: ParsedMessage, subject: str) -> Headers:
    def text(name: str) -> str | None:
        return text_header(pm, name)

    from_addrs = pm.addresses("from")
    return Headers(
        subject=subject,
        from_addr=from_addrs[0] if from_addrs else None,
        return_path=text("return-path"),
        auto_submitted=text("auto-submitted"),
        precedence=text("precedence"),
        x_autoreply=text("x-autoreply"),
        x_autorespond=text("x-autorespond"),
        x_mailbot_loop=text("x-mailbot-loop"),
        in_reply_to=pm.message_ids("in-reply-to"),
        references=pm.message_ids("references"),
        content_types=pm.content_types(),
    )


def text_header(pm: ParsedMessage, name: str) -> str | None:
    raw = pm.header(name)
    return None if raw is None else decode_bytes(raw).strip()


_MSGID = re.compile(r"<[^<>\s]+>")
RETURNED_ID_HEADERS = ("message-id", "in-reply-to", "references")
MAX_RETURNED_HEADERS = 256 * 1024  # a text/rfc822-headers part is read this far at most


def returned_message_ids(pm: ParsedMessage) -> list[str]:
    """The Message-IDs a delivery report cites of the message it returns: the headers of its
    message/rfc822 part (or of a text/rfc822-headers part), Message-ID first."""
    blocks: list[list[tuple[str, bytes]]] = []
    for part in pm.nodes:
        if part.forwarded == 1 and part.depth >= 1 and part.headers and any(
                n == "message-id" for n, _v in part.headers):
            blocks.append(part.headers)  # the top entity of a returned message/rfc822
        elif part.content_type == "text/rfc822-headers":
            blocks.append(parse_headers(part.decoded(limit=MAX_RETURNED_HEADERS))[0])
    ids: list[str] = []
    for headers in blocks:
        for name in RETURNED_ID_HEADERS:
            for n, v in headers:
                if n == name:
                    ids.extend(m for m in _MSGID.findall(decode_bytes(v)) if m not in ids)
    return ids


def _bounced_case(facts: MessageFacts, pm: ParsedMessage,
                  case_exists: Callable[[str], bool] | None) -> str | None:
    """The case of ours a bounce returns a message of: the returned message's own
    Message-ID decides, else what it cites; a case not known is none."""
    facts.returned_message_ids = returned_message_ids(pm)
    own = facts.returned_message_ids[:1]
    ref = case_ref_from_ids(own) or case_ref_from_ids(reversed(facts.returned_message_ids))
    if ref and case_exists is not None:
        try:
            if not case_exists(ref):
                return None
        except Exception:  # noqa: BLE001 - a failing lookup must not lose the message
            pass
    return ref


def _is_body(part: Part) -> bool:
    return (part.content_type in ("text/plain", "text/html") and not part.filename
            and part.disposition != "attachment")


def _attachment_facts(part: Part, settings: Mapping[str, Any]) -> list[AttachmentFact]:
    filename = part.filename or ""
    if not filename:
        filename = "(unnamed)" + (mimetypes.guess_extension(part.content_type) or "")
    inline = part.disposition == "inline" or (part.content_id is not None and
                                              part.disposition != "attachment")
    if (part.content_type in SMIME_SIGNATURE_TYPES or part.in_signed_signature
            or filename.lower().endswith((".p7s", ".p7m"))):
        # The signer's certificate inside an S/MIME signature is no material.
        digest, size = part.digest_and_size()
        return [AttachmentFact(filename, part.content_type, size, ["other"], digest, None,
                               sniffed="smime-signature", inline=inline,
                               content_id=part.content_id)]
    prefix = part.decoded_prefix(512)
    kind = sniff_type(prefix)
    whole = kind not in SCAN_TYPES and part.encoded_size <= MAX_FULL_DECODE
    if whole:
        data = part.decoded()
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
    else:
        # A scan is judged by name and magic bytes; its size is counted from the encoding,
        # never decoded or hashed (the archived message's sha256 covers its bytes).
        data, digest, size = prefix, "", part.decoded_size()
    try:
        facts = classify_attachment(filename, part.content_type, data, settings, inline=inline,
                                    content_id=part.content_id)
    except Exception:  # noqa: BLE001 - a collaborator's slip must not lose the message
        log.exception("attachment classification failed for %r", filename)
        facts = []
    if not facts:
        facts = [AttachmentFact(filename, part.content_type, size, ["other"], digest)]
    for fact in facts:
        if fact.filename == filename:  # the file itself, not a member of it
            fact.size, fact.sha256 = size, digest
            fact.content_type = fact.content_type or part.content_type
            fact.inline, fact.content_id = inline, part.content_id
            if not whole:
                fact.data = None
            elif fact.data is None and set(fact.materials) & {"csr", "certificate",
                                                              "application_form"}:
                fact.data = data
        fact.sniffed = fact.sniffed or kind
        if not fact.materials:
            fact.materials = ["other"]
    return facts


def _body_csr(texts: list[tuple[str, str]]) -> AttachmentFact | None:
    """One `(body)` fact for a CSR pasted in the text or HTML body (listed once)."""
    for ctype, text in texts:
        if not _CSR_HINT.search(text):
            continue
        if ctype == "text/html":
            text = html_to_text(text)
        try:
            der = find_csr_in_text(text)
        except Exception:  # noqa: BLE001
            log.exception("body CSR search failed")
            der = None
        if der:
            return AttachmentFact(BODY_FILENAME, ctype, len(der), ["csr"],
                                  hashlib.sha256(der).hexdigest(), der, sniffed="body")
    return None


def certificate_der(data: bytes | None) -> bytes | None:
    """DER of a certificate file (DER, PEM, bare base64, UTF-16) or None."""
    if not data:
        return None
    blobs = decode_text_or_der(data)
    return blobs[0] if blobs else None


def _analyse(raw: Any, settings: Mapping[str, Any],
             case_exists: Callable[[str], bool] | None) -> MessageFacts:
    pm = parse_message(raw)
    facts = MessageFacts(size=len(raw))
    subject = pm.header_text("subject")
    facts.subject = subject
    h = _headers(pm, subject)
    facts.from_addr = h.from_addr
    reply_to = pm.addresses("reply-to")
    facts.reply_to = reply_to[0] if reply_to else None
    facts.to_addrs = pm.addresses("to")
    mids = pm.message_ids("message-id")
    facts.message_id = mids[0] if mids else (pm.header_text("message-id") or None)
    facts.in_reply_to = h.in_reply_to[0] if h.in_reply_to else None
    facts.references = h.references
    facts.date = pm.header_text("date") or None
    facts.return_path = h.return_path
    facts.is_list = is_list_mail(text_header(pm, "list-id"), text_header(pm, "list-unsubscribe"),
                                 text_header(pm, "list-post"), h.precedence)
    facts.is_spam = is_spam_marked({name: text_header(pm, name) for name in SPAM_HEADERS})

    texts: list[tuple[str, str]] = []
    for part in pm.leaves:
        if part.content_type in REPORT_PART_TYPES:
            continue
        if _is_body(part):
            if sum(len(t) for _c, t in texts) < MAX_TEXT_BYTES:
                texts.append((part.content_type, part.text()))
            if part.content_type == "text/plain" and not facts.text_body:
                facts.text_body = texts[-1][1]
            continue
        if len(facts.attachments) >= MAX_ATTACHMENTS:
            continue
        facts.attachments.extend(_attachment_facts(part, settings))
    body_csr = _body_csr(texts)
    if body_csr is not None:
        facts.attachments.append(body_csr)

    for att in facts.attachments:
        facts.findings.extend(getattr(att, "findings", None) or [])
    form_fact = next((a for a in facts.attachments if "application_form" in a.materials
                      and (getattr(a, "form", None) is not None
                           or (a.data and a.data[:2] == b"PK"))), None)
    if form_fact is not None:
        if getattr(form_fact, "form", None) is not None:
            facts.form = dict(form_fact.form or {})  # read once, during classification
        else:
            try:
                facts.form = dict(extract_form(form_fact.data or b""))
            except Exception:  # noqa: BLE001
                log.exception("form extraction failed")
    csr_fact = next((a for a in facts.attachments if "csr" in a.materials), None)
    cert_fact = next((a for a in facts.attachments if "certificate" in a.materials), None)

    parsed_subject = ApplicationSubject.parse(subject, settings)
    verdict = classify(h, parsed_subject, form_type=facts.form.get("application_type"),
                       has_csr=csr_fact is not None, has_certificate=cert_fact is not None,
                       has_form=form_fact is not None or any(
                           "application_form" in a.materials for a in facts.attachments),
                       settings=settings, case_exists=case_exists)
    facts.kind, facts.case_ref = verdict.kind, verdict.case_ref
    if facts.kind == "bounce":
        # In-Reply-To/References of the report itself were read by classify; a report
        # usually carries the returned message's headers instead.
        bounced = _bounced_case(facts, pm, case_exists)
        facts.case_ref = facts.case_ref or bounced
    facts.is_bounce, facts.is_auto_reply = verdict.is_bounce, verdict.is_auto_reply
    facts.is_auto_submitted = bool(h.auto_submitted) and \
        h.auto_submitted.split(";")[0].strip().lower() != "no"
    facts.is_revocation_hint = parsed_subject.is_revocation_hint
    facts.is_application_subject = parsed_subject.is_application
    facts.findings.extend(verdict.findings)
    if facts.kind in ("new", "revoke", "reply"):
        facts.company = parsed_subject.company or facts.form.get("applicant_org") or None

    if csr_fact is not None and csr_fact.data and facts.kind in ("new", "revoke", "reply"):
        try:
            report = check_csr(csr_fact.data)
        except Exception:  # noqa: BLE001 - the checker promises not to raise; be sure
            log.exception("CSR check failed")
            report = None
        if report is not None:
            facts.csr = report
            facts.csr_der = getattr(report, "der", None) or None
            facts.findings.extend(getattr(report, "findings", []) or [])
        else:
            facts.csr_der = csr_fact.data
    if cert_fact is not None:
        facts.certificate_der = certificate_der(cert_fact.data)
        facts.certificates_der = [d for d in (certificate_der(a.data) for a in facts.attachments
                                              if "certificate" in a.materials) if d]
    if not pm.headers:
        facts.findings.append(Finding("unparseable_message", "reject",
                                      "no header fields found: not an email message"))
    return facts


def analyse_message(raw: bytes, settings: Mapping[str, Any] | None = None, *,
                    case_exists: Callable[[str], bool] | None = None) -> MessageFacts:
    """Everything intake decides about one message (bytes or an mmap). Never raises."""
    if settings is None:
        settings = _default_settings()
    try:
        return _analyse(raw, settings, case_exists)
    except Exception as exc:  # noqa: BLE001 - any input must still yield facts
        log.exception("analysis failed")
        facts = MessageFacts(kind="unrelated")
        try:
            facts.size = len(raw)
        except Exception:  # noqa: BLE001
            pass
        facts.findings.append(Finding("unparseable_message", "reject",
                                      f"message could not be analysed: {type(exc).__name__}"))
        return facts


def _default_settings() -> Mapping[str, Any]:
    try:
        from mailbot.config import load_rule_settings
        return load_rule_settings()
    except Exception:  # noqa: BLE001 - built-in defaults apply
        return {}
