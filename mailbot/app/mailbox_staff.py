"""Staff's marks in the mailbox turned into workflow actions (DESIGN.md §3, CONTRACTS.md).

Staff who read xmport in their usual client approve an application by setting the red flag
([mailbox_staff] approve_flag, `\\Flagged`) on its mail where mailbot left it (the processed
folder, or INBOX with the processed keyword where the server cannot move), or by moving the
mail to 已确认; moving it to 退回 rejects it with [cases] reject_reason. Each is recorded by
the workflow as a staff action "via mailbox" by [cases] mailbox_actor and counts as one
approval (with approvals_required = 2 someone else must approve too).

How a mark counts once. The mark is the message's state in the mailbox, so what was done
with it is written on the message as well: after acting, mailbot sets a keyword
($MailbotApproved, $MailbotRejected, or $MailbotRefused when the workflow said no), and the
listing asks the server only for marks without the first two (SEARCH FLAGGED UNKEYWORD
$MailbotApproved ...), so years of handled mail cost one SEARCH per folder. A keyword
travels with the message through MOVE and survives restarts and new UIDs, with no table of
(folder, UIDVALIDITY, UID) that a move or a UIDVALIDITY change would outdate. The database
is written first, as intake does: the workflow's action commits, then the keyword is set. A
crash in between leaves a mark without keyword, which the next cycle finds already done in
the case (approved, rejected, or this actor's approval already counted in the round; a
refusal already in the audit log) and only gets its keyword.

A mark the workflow refuses (blocking findings, a state that cannot be approved) is recorded
once in the case's audit log (action `mailbox_refused`, via mailbox: `cases show` has it,
`status --json` lists it while nothing else happened on the case), logged once, and keeps
$MailbotRefused so the client can show it. It is not tried again by itself: an approval is
a person's act, and a case that later became approvable (say, after the applicant sent new
files) must not be approved by a flag set before. To try again staff mark anew: clear the
flag (mailbot then drops $MailbotRefused) and set it again, move the mail to the other
folder (a refused flag, then the mail moved to 退回, is a new mark: the audit log tells which
mark was refused), or use `mailbot cases`.

A mark on mail that opened no case (unrelated mail, a bounce) or that mailbot does not know
is left alone and logged once per run.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailbot.cases import workflow
from mailbot.cases.audit import append_audit
from mailbot.cases.models import AuditEntry, Case
from mailbot.config import Config, ConfigError
from mailbot.faults import crash_point
from mailbot.intake.models import MESSAGE_ARCHIVED, Message
from mailbot.mailbox.base import INBOX, MailboxError, MailSource, MessageRef
from mailbot.mailbox.imap import search_criteria  # the check the server's SEARCH needs

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)

APPLICANT_KINDS = ("new", "revoke", "reply")  # the kinds of mail a staff mark can act on

APPROVE, REJECT = "approve", "reject"
REFUSED_ACTION = "mailbox_refused"  # the audit action of a mark the workflow refused
WRITE_TRIES = 3  # a clash with another writer on the audit chain head: read again, retry
# States in which an approval mark has nothing left to do (the case was approved already).
APPROVED_OR_LATER = ("approved", "issued", "revoked", "delivered")


@dataclass(frozen=True)
class Mark:
    """One staff mark: a message and what it asks for."""

    ref: MessageRef
    action: str  # approve | reject
    where: str  # for people: "flag in 已处理", "moved to 退回"


@dataclass
class MarksReport:
    approved: list[str] = field(default_factory=list)  # case refs (one approval each)
    rejected: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # done before (e.g. after a crash)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (case ref, why)
    ignored: int = 0  # marks on mail that opened no case, or unknown mail
    cleared: int = 0  # refusal keywords dropped because staff cleared the flag


def check_settings(cfg: Config) -> None:
    """Refuse [mailbox_staff] values that cannot work (ConfigError naming the key)."""
    ms = cfg.mailbox_staff
    for key in ("approve_flag", "approved_keyword", "rejected_keyword", "refused_keyword"):
        value = getattr(ms, key)
        try:
            search_criteria([value])
        except ValueError as exc:
            raise ConfigError(f"[mailbox_staff] {key} = {value!r}: {exc}") from None
        if key != "approve_flag" and value.startswith("\\"):
            raise ConfigError(f"[mailbox_staff] {key} = {value!r}: a keyword, not a system "
                              "flag (e.g. \"$MailbotApproved\")")
    for key in ("approve_folder", "reject_folder"):
        if not getattr(ms, key).strip():
            raise ConfigError(f"[mailbox_staff] {key} must name a folder")
    if ms.approve_folder == ms.reject_folder:
        raise ConfigError("[mailbox_staff] approve_folder and reject_folder must differ")
    if ms.flag_poll_seconds < 0:
        raise ConfigError("[mailbox_staff] flag_poll_seconds must be 0 (once per cycle) or more")


class MailboxMarks:
    """Finds staff's marks in the mailbox and hands them to the workflow; see the module."""

    def __init__(self, cfg: Config, sessions: sessionmaker[Session],
                 source: MailSource) -> None:
        check_settings(cfg)
        self.cfg = cfg
        self.ms = cfg.mailbox_staff
        self.sessions = sessions
        self.source = source
        self.policy = workflow.Policy.from_config(cfg.cases)
        self._folders_made = False
        self._noted: set[tuple[str, str]] = set()  # (Message-ID or key, why): logged once
        self._states: dict[str, object] | None = None  # the watched folders as last handled

    # -- finding marks ----------------------------------------------------------------------
    def marks(self) -> list[Mark]:
        """Every mark not yet acted on, approvals first, oldest first within each place."""
        ms, intake = self.ms, self.cfg.intake
        done = [ms.approved_keyword]
        flag, processed = ms.approve_flag, intake.processed_folder
        src = self.source
        found = [Mark(r, APPROVE, f"flag in {processed}")
                 for r in src.marked(processed, having=[flag], lacking=done)]
        # Where the server cannot move, processed mail stays in INBOX with the keyword.
        found += [Mark(r, APPROVE, f"flag in {INBOX}")
                  for r in src.marked(INBOX, having=[flag, intake.processed_keyword],
                                      lacking=done)]
        found += [Mark(r, APPROVE, f"moved to {ms.approve_folder}")
                  for r in src.marked(ms.approve_folder, lacking=done)]
        found += [Mark(r, REJECT, f"moved to {ms.reject_folder}")
                  for r in src.marked(ms.reject_folder, lacking=[ms.rejected_keyword])]
        return found

    def _make_folders(self) -> None:
        """已确认 and 退回 made once per run (under the namespace), so staff see them."""
        if self._folders_made:
            return
        for folder in (self.ms.approve_folder, self.ms.reject_folder):
            try:
                self.source.create_folder(folder)
            except MailboxError as exc:  # staff can still make it; marks in it count then
                log.warning("cannot create the staff folder %s: %s", folder, exc)
        self._folders_made = True

    def _clear_stale_refusals(self) -> int:
        """A refused flag that staff cleared: drop $MailbotRefused, so setting the flag again
        is a new mark. (A mail moved out of 已确认/退回 lands here too.)"""
        ms, intake = self.ms, self.cfg.intake
        refs = self.source.marked(intake.processed_folder, having=[ms.refused_keyword],
                                  lacking=[ms.approve_flag])
        refs += self.source.marked(INBOX, having=[ms.refused_keyword, intake.processed_keyword],
                                   lacking=[ms.approve_flag])
        if refs:
            self.source.remove_flags(refs, [ms.refused_keyword])
            log.info("%d refused mark(s) cleared by staff: a new flag counts again", len(refs))
        return len(refs)

    def watched_states(self) -> dict[str, object] | None:
        """The state of every folder a mark sits in, or None when the mailbox cannot tell
        (no CONDSTORE): a poll that finds them unchanged has nothing to do."""
        folders = (self.cfg.intake.processed_folder, self.ms.approve_folder,
                   self.ms.reject_folder)
        states = {f: self.source.folder_state(f) for f in folders}
        return None if any(v is None for v in states.values()) else dict(states)

    # -- acting -----------------------------------------------------------------------------
    def run(self, *, if_changed: bool = False) -> MarksReport:
        """Act on every mark; with `if_changed` (the daemon's frequent poll) only when a
        watched folder changed since the last run (INBOX changes wake the daemon anyway)."""
        report = MarksReport()
        if not self.ms.enabled:
            return report
        self.source.open()
        states = self.watched_states()
        if if_changed and states is not None and states == self._states:
            return report
        self._make_folders()
        report.cleared = self._clear_stale_refusals()
        found = self.marks()
        if not found:
            self._states = states
            return report
        mids = self.source.message_ids([m.ref for m in found])
        for mark in found:
            if mark.ref not in mids:  # moved or expunged since the search: next time
                continue
            self._handle(mark, mids[mark.ref], report)
        if report.approved or report.rejected or report.refused:
            log.info("mailbox marks: %d approval(s), %d rejection(s), %d refused",
                     len(report.approved), len(report.rejected), len(report.refused))
        # Our own keywords changed the folders: the next poll looks once more, then rests.
        self._states = None
        return report

    def _note_once(self, key: str, why: str, text: str, *args: object) -> None:
        if (key, why) not in self._noted:
            self._noted.add((key, why))
            log.info(text, *args)

    def _handle(self, mark: Mark, mid: str | None, report: MarksReport) -> None:
        key = mid or f"{mark.ref.folder}/{mark.ref.key}"
        if mid is None:
            report.ignored += 1
            self._note_once(key, "no-mid", "%s: a mail without Message-ID is not one mailbot "
                            "can tell: ignored", mark.where)
            return
        if self.ms.refused_keyword in mark.ref.flags and self._refusal_recorded(mark, mid):
            return  # refused before, here, as this kind of mark: staff must mark anew
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                outcome = self._decide(mark, mid)
                break
            except IntegrityError:
                if attempt == WRITE_TRIES:
                    raise
        kind, ref, why = outcome
        if kind == "wait":  # recorded, not yet analysed: the case comes with processing
            return
        if kind == "ignore":
            report.ignored += 1
            self._note_once(key, why, "%s on %s: %s; ignored", mark.where, mid, why)
            return
        # Recorded in the database: now the mark carries what was done with it.
        done = self.ms.approved_keyword if mark.action == APPROVE else self.ms.rejected_keyword
        if kind == "refused":
            report.refused.append((ref, why))
            self.source.add_keyword([mark.ref], self.ms.refused_keyword)
            return
        if kind == "approved":
            report.approved.append(ref)
        elif kind == "rejected":
            report.rejected.append(ref)
        else:
            report.already.append(ref)
        self.source.add_keyword([mark.ref], done)
        if self.ms.refused_keyword in mark.ref.flags:
            self.source.remove_flags([mark.ref], [self.ms.refused_keyword])

    def _refusal_recorded(self, mark: Mark, mid: str) -> bool:
        """Whether this very mark (the same kind, in the same place, on this mail) was
        refused before. A refused mail staff then moved elsewhere (a refused flag, then the
        mail moved to 退回) is a new mark."""
        with self.sessions() as s:
            return s.scalars(select(AuditEntry.id).where(
                AuditEntry.action == REFUSED_ACTION,
                AuditEntry.reason.startswith(_reason_prefix(mark, mid), autoescape=True),
            ).limit(1)).first() is not None

    def _case_of(self, s: Session, mid: str) -> tuple[Case | None, str]:
        """The case the message with this Message-ID was recorded into (locked), or why
        there is none ("wait": recorded but not yet analysed)."""
        rows = s.execute(select(Message.case_id, Message.status, Message.kind)
                         .where(Message.message_id == mid).order_by(Message.id)).all()
        if not rows:
            return None, "not a mail mailbot has recorded"
        # Only the applicant's own mail stands for the case: a bounce or an automatic reply
        # joins its case too, but a flag on it approves nothing.
        case_ids = [c for c, _st, kind in rows if c is not None and kind in APPLICANT_KINDS]
        if not case_ids:
            if any(st == MESSAGE_ARCHIVED for _c, st, _k in rows):
                return None, "wait"
            return None, "the mail opened no case (not an application)"
        case = s.get(Case, case_ids[0], with_for_update=True)
        return case, ""

    def _decide(self, mark: Mark, mid: str) -> tuple[str, str, str]:
        """Act on one mark in one transaction: (outcome, case ref, why).

        outcome: approved | rejected | already | refused | ignore | wait.
        """
        actor, policy = self.policy.mailbox_actor.strip(), self.policy
        with self.sessions() as s:
            case, why = self._case_of(s, mid)
            if case is None:
                return ("wait" if why == "wait" else "ignore"), "", why
            if self._done_before(s, case, mark.action, actor):
                s.rollback()
                log.info("case %s: nothing to do for the %s on %s: the case is %s%s",
                         case.ref, mark.where, mid, case.state,
                         "" if case.state in APPROVED_OR_LATER + ("rejected",)
                         else f" and {actor} has approved it in this round")
                return "already", case.ref, ""
            try:
                if mark.action == APPROVE:
                    workflow.approve(s, case, by=actor, via="mailbox", policy=policy)
                else:
                    workflow.reject(s, case, by=actor, reason=policy.reject_reason,
                                    via="mailbox")
            except workflow.TransitionRefused as exc:
                s.rollback()
                return self._refused(s, mark, mid, case.id, str(exc))
            s.commit()
            crash_point("mark_before_keyword")
            if mark.action == APPROVE:
                log.info("case %s: approved by %s (%s on %s) -> %s", case.ref, actor,
                         mark.where, mid, case.state)
                return "approved", case.ref, ""
            log.info("case %s: rejected by %s (%s on %s)", case.ref, actor, mark.where, mid)
            return "rejected", case.ref, ""

    def _done_before(self, s: Session, case: Case, action: str, actor: str) -> bool:
        """Whether what the mark asks for is already so: the case rejected (for 退回), or
        approved, or approved by this actor in the current round (for an approval)."""
        if action == REJECT:
            return case.state == "rejected"
        if case.state in APPROVED_OR_LATER:
            return True
        return actor in workflow.approvals_so_far(s, case)

    def _refused(self, s: Session, mark: Mark, mid: str, case_id: int,
                 why: str) -> tuple[str, str, str]:
        """Record the refusal in the case's audit log unless it is there since the case's
        last other row (a crash before the keyword, or the same refusal again)."""
        case = s.get(Case, case_id, with_for_update=True)
        assert case is not None
        reason = f"{_reason_prefix(mark, mid)} {why}"
        last_other = s.scalar(select(func.max(AuditEntry.id)).where(
            AuditEntry.case_id == case_id, AuditEntry.action != REFUSED_ACTION))
        q = select(AuditEntry.id).where(AuditEntry.case_id == case_id,
                                        AuditEntry.action == REFUSED_ACTION,
                                        AuditEntry.reason == reason)
        if last_other is not None:
            q = q.where(AuditEntry.id > last_other)
        if s.scalars(q).first() is None:
            append_audit(s, actor=self.policy.mailbox_actor.strip(), action=REFUSED_ACTION,
                         case=case, reason=reason, via="mailbox")
            s.commit()
            log.warning("case %s: the %s was not taken: %s / 邮箱审核未生效", case.ref,
                        mark.where, why)
        return "refused", case.ref, why


def _reason_prefix(mark: Mark, mid: str) -> str:
    return f"{mark.where} on {mid}:"


# One per daemon: it remembers what it logged and that the folders exist.
_BY_DAEMON: weakref.WeakKeyDictionary[Daemon, MailboxMarks] = weakref.WeakKeyDictionary()


def mailbox_job(daemon: Daemon) -> str | None:
    """The daemon's job: staff's flags and folders, first after the mail (before issuance)."""
    marks = _BY_DAEMON.get(daemon)
    if marks is None:
        marks = _BY_DAEMON[daemon] = MailboxMarks(daemon.cfg, daemon.sessions, daemon.source)
    r = marks.run(if_changed=daemon.polling_marks)
    if not daemon.cfg.mailbox_staff.enabled:
        return None
    return (f"approved {len(r.approved)}, rejected {len(r.rejected)}, "
            f"refused {len(r.refused)}")


def open_refusals(session: Session) -> list[dict[str, object]]:
    """Refused mailbox marks nothing happened after on their case: for `mailbot status`."""
    last = (select(AuditEntry.case_id, func.max(AuditEntry.id).label("last_id"))
            .where(AuditEntry.case_id.is_not(None)).group_by(AuditEntry.case_id).subquery())
    rows = session.execute(
        select(Case.ref, Case.state, AuditEntry.at, AuditEntry.reason)
        .join(last, AuditEntry.id == last.c.last_id)
        .join(Case, Case.id == AuditEntry.case_id)
        .where(AuditEntry.action == REFUSED_ACTION).order_by(AuditEntry.id)).all()
    return [{"ref": ref, "state": state, "at": at.isoformat(), "reason": reason}
            for ref, state, at, reason in rows]
