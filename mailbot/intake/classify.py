"""What kind of message is it: new, revoke, reply, auto_reply, bounce or unrelated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailbot.findings import Finding
from mailbot.intake.subject import ApplicationSubject, is_auto_reply_subject
from mailbot.refs import ref_in_message_id

# Our Message-IDs carry the case number in the local part, whatever the domain.
BOUNCE_SENDERS = ("mailer-daemon", "postmaster")
REPORT_TYPES = ("multipart/report", "message/delivery-status", "message/global-delivery-status")
AUTO_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")


@dataclass
class Headers:
    """The few header values classification needs, already decoded."""

    subject: str = ""
    from_addr: str | None = None
    return_path: str | None = None  # raw, e.g. "<>"
    auto_submitted: str | None = None
    precedence: str | None = None
    x_autoreply: str | None = None
    x_autorespond: str | None = None
    x_mailbot_loop: str | None = None  # set on every mail a mailbot sends
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)


@dataclass
class Classification:
    kind: str
    case_ref: str | None
    findings: list[Finding] = field(default_factory=list)
    is_bounce: bool = False
    is_auto_reply: bool = False


def is_bounce(h: Headers) -> bool:
    """Delivery reports, MAILER-DAEMON/postmaster senders, a null Return-Path."""
    if h.content_types & set(REPORT_TYPES):
        return True
    local = (h.from_addr or "").split("@", 1)[0].strip().lower()
    if local in BOUNCE_SENDERS:
        return True
    return h.return_path is not None and h.return_path.strip().replace(" ", "") == "<>"


# Spam verdicts that providers and filters write (SpamAssassin, Rspamd, Exchange, Tencent).
SPAM_HEADERS = ("x-spam-flag", "x-spam-status", "x-spam", "x-spam-verdict",
                "x-ms-exchange-organization-scl", "x-qq-spam")
SPAM_SCL = 5  # Exchange's spam confidence level from which mail goes to Junk


def is_list_mail(list_id: str | None, list_unsubscribe: str | None, list_post: str | None,
                 precedence: str | None) -> bool:
    """Mailing-list mail (RFC 2369/2919 headers, or Precedence: list/bulk): no notice for it."""
    if any(v for v in (list_id, list_unsubscribe, list_post)):
        return True
    return bool(precedence) and precedence.strip().lower() in ("list", "bulk")


def is_spam_marked(headers: Mapping[str, str | None]) -> bool:
    """True when a filter on the way marked the mail as spam (then no notice is sent for
    unrelated mail: the sender is most likely forged)."""
    for name, value in headers.items():
        if not value:
            continue
        word = value.strip().split(None, 1)[0].rstrip(",;").lower() if value.strip() else ""
        if name == "x-ms-exchange-organization-scl":
            try:
                if int(word) >= SPAM_SCL:
                    return True
            except ValueError:
                continue
        elif name == "x-spam-verdict":
            if word in ("spam", "junk"):
                return True
        elif word in ("yes", "true", "spam"):
            return True
    return False


def is_auto_reply(h: Headers, settings: Mapping[str, Any] | None = None) -> bool:
    """RFC 3834 Auto-Submitted (not "no"), Precedence bulk/junk/list, X-Autoreply,
    X-Autorespond, or an automatic-reply subject. X-Auto-Response-Suppress is no sign."""
    if h.auto_submitted is not None:
        token = h.auto_submitted.split(";", 1)[0].strip().lower()
        if token and token != "no":
            return True
    if h.precedence and h.precedence.strip().lower() in AUTO_PRECEDENCE:
        return True
    if h.x_autoreply is not None and h.x_autoreply.strip().lower() not in ("no", "false", "0"):
        return True
    if h.x_autorespond is not None and h.x_autorespond.strip().lower() not in ("no", "false"):
        return True
    if h.x_mailbot_loop:  # one of our own answers came back (forwarded, From rewritten)
        return True
    return is_auto_reply_subject(h.subject, settings)


def case_ref_from_ids(ids: Iterable[str]) -> str | None:
    """The case number cited by one of our own Message-IDs (the last one cited wins)."""
    found = None
    for mid in ids:
        found = ref_in_message_id(mid) or found
    return found


def application_type(form_type: str | None, revocation_hint: bool, has_csr: bool,
                     has_certificate: bool) -> tuple[str, list[Finding]]:
    """new or revoke from the form's 申请类别, the subject and the attachments; when they
    disagree the attachments decide, and both-or-neither is new with a finding."""
    signals: set[str] = set()
    form_type = (form_type or "").strip().lower()
    if form_type in ("new", "revoke"):
        signals.add(form_type)
    elif "new" in form_type and "revoke" in form_type:
        signals |= {"new", "revoke"}  # both boxes ticked
    if revocation_hint:
        signals.add("revoke")
    by_files = ("new" if has_csr and not has_certificate
                else "revoke" if has_certificate and not has_csr else None)
    if by_files:
        signals.add(by_files)
    if len(signals) == 1:
        return signals.pop(), []
    if len(signals) > 1 and by_files:
        return by_files, []
    if not signals and not (has_csr and has_certificate):
        return "new", []  # nothing says revoke; the missing CSR is reported as missing
    detail = ("application type unclear: "
              f"form={form_type or '-'}, subject 注销={'yes' if revocation_hint else 'no'}, "
              f"csr={'yes' if has_csr else 'no'}, certificate={'yes' if has_certificate else 'no'}")
    return "new", [Finding("application_type_ambiguous", "reject", detail,
                           facts={"form": form_type, "subject_revoke": revocation_hint,
                                  "csr": has_csr, "certificate": has_certificate})]


def classify(h: Headers, subject: ApplicationSubject, *, form_type: str | None,
             has_csr: bool, has_certificate: bool, has_form: bool,
             settings: Mapping[str, Any] | None = None,
             case_exists: Any = None) -> Classification:
    """bounce > auto_reply > reply > new/revoke > unrelated."""
    ref = subject.case_ref or case_ref_from_ids(h.in_reply_to) \
        or case_ref_from_ids(reversed(h.references))
    if ref and case_exists is not None:
        try:
            if not case_exists(ref):
                ref = None  # cites a case we do not know: judge it on its own
        except Exception:  # noqa: BLE001 - a failing lookup must not lose the message
            pass
    if is_bounce(h):
        return Classification("bounce", ref, is_bounce=True)
    if is_auto_reply(h, settings):
        return Classification("auto_reply", ref, is_auto_reply=True)
    if ref:
        return Classification("reply", ref)
    if not (subject.is_application or has_form or has_csr or has_certificate):
        return Classification("unrelated", None)
    kind, findings = application_type(form_type, subject.is_revocation_hint, has_csr,
                                      has_certificate)
    if subject.is_application:
        findings = list(subject.findings) + findings
    else:
        findings = [Finding("subject_format", "warn",
                            f"subject is not 企业名称+数字证书申办: {subject.stripped!r}",
                            facts={"subject": subject.stripped})] + findings
    return Classification(kind, None, findings)
