"""Staff actions that span layers: an application handed in at the service hall (现场受理),
and a case's files exported for viewing.

现场受理 makes the files into a mail (From the staff member, subject 企业名称+数字证书申办
from the form when it can be read) and hands it to intake exactly as the mailbox would: it is
archived, recorded, analysed and recorded as a case by the same code, from a one-message
source, so nothing about it is special-cased.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailbot.app.analysis import analyse_and_judge
from mailbot.app.judging import case_recorder
from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case
from mailbot.clock import now
from mailbot.config import Config
from mailbot.intake import archive, mime
from mailbot.intake.form import extract_form
from mailbot.intake.ingest import ingest
from mailbot.intake.models import Message
from mailbot.intake.processor import Processor
from mailbot.mailbox.base import INBOX, MessageRef

HALL_SOURCE = "hall:"  # the identity of the one-message source of 现场受理
SUBJECT_TAIL = "+数字证书申办"
MAX_FILES = 50

# progress(done, total, what) of 现场受理: files read, then the analysis (total 0: a stage)
Progress = Callable[[int, int, str], None]


class StaffActionFailed(Exception):
    """A staff action could not be done; one readable line."""


# -- 现场受理 ------------------------------------------------------------------------------
class OneMessageSource:
    """A mailbox holding one message: what intake's ingest reads for 现场受理."""

    keyed_by_uid = False
    streams_large = False

    def __init__(self, raw: bytes, key: str) -> None:
        self.identity = HALL_SOURCE
        self._raw = raw
        self._ref = MessageRef(uid=0, key=key, size=len(raw), folder=INBOX)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def uidvalidity(self) -> int:
        return 0

    def list_messages(self, since_uid: int = 0) -> list[MessageRef]:
        return [self._ref]

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            if ref.key == self._ref.key:
                yield ref, self._raw

    def fetch_range(self, ref: MessageRef, offset: int, length: int) -> bytes | None:
        return self._raw[offset:offset + length]

    def supports_move(self) -> bool:
        return False  # the processed "keyword" below: there is no mailbox to tidy

    def add_keyword(self, refs: Sequence[MessageRef], keyword: str) -> None:
        pass

    def move(self, refs: Sequence[MessageRef], folder: str) -> None:  # pragma: no cover
        pass


def _form_of(files: list[Path]) -> dict[str, str]:
    for path in files:
        if path.suffix.lower() == ".docx":
            try:
                form = extract_form(path.read_bytes())
            except Exception:  # noqa: BLE001 - an unreadable form is intake's finding
                continue
            if form.get("applicant_org"):
                return form
    return {}


def hall_message(cfg: Config, folder: Path, by: str, *,
                 progress: Progress | None = None) -> bytes:
    """The files of `folder` as one application mail from staff member `by`."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise StaffActionFailed(f"{folder}: no files to take in")
    if len(files) > MAX_FILES:
        raise StaffActionFailed(f"{folder}: {len(files)} files, more than {MAX_FILES}")
    company = (_form_of(files).get("applicant_org") or "").strip()
    msg = EmailMessage()
    msg["From"] = formataddr((by, cfg.mailbox.our_address))
    msg["To"] = cfg.mailbox.our_address
    msg["Subject"] = f"{company}{SUBJECT_TAIL}" if company else SUBJECT_TAIL.lstrip("+")
    msg["Date"] = format_datetime(now())
    msg["Message-ID"] = f"<hall.{uuid.uuid4().hex}@{cfg.smtp.message_id_domain}>"
    msg["X-Mailbot-Hall"] = "现场受理"
    msg.set_content(f"现场受理：{by} 于服务大厅收取的申请材料（{len(files)} 个文件）。\n")
    for n, path in enumerate(files, 1):
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype,
                           filename=path.name)
        if progress is not None:
            progress(n, len(files), "files read")
    return msg.as_bytes()


@dataclass
class HallResult:
    ref: str
    state: str
    message_row_id: int


def take_in(cfg: Config, sessions: sessionmaker[Session], raw: bytes) -> int:
    """One raw message through intake as the mailbox would bring it: archived, recorded,
    analysed and recorded as a case. Returns its message row id."""
    source = OneMessageSource(raw, key=archive.sha256_hex(raw))
    report = ingest(cfg, sessions, source)
    if not report.new_row_ids:
        raise StaffActionFailed("the files were taken in before (the same message exists)")
    # One message: one parse worker is plenty.
    one = replace(cfg, intake=replace(cfg.intake, workers=1))
    processor = Processor(one, sessions, case_recorder(cfg),
                          analyse=analyse_and_judge)
    try:
        processor.submit(report.new_row_ids)
        processor.drain()
    finally:
        processor.close()
    return report.new_row_ids[0]


def new_from_dir(cfg: Config, sessions: sessionmaker[Session], folder: Path, *,
                 by: str, progress: Progress | None = None) -> HallResult:
    """Take in an application handed in at the hall (take_in), then note in the case's log
    who took it in. `progress` hears of the files read, then of the analysis."""
    name = by.strip()
    if not folder.is_dir():
        raise StaffActionFailed(f"{folder}: no such folder")
    raw = hall_message(cfg, folder, name, progress=progress)
    if progress is not None:
        size = (f"{len(raw) / 2**20:.1f} MB" if len(raw) >= 2**20
                else f"{max(len(raw) // 1024, 1)} KB")
        progress(0, 0, f"archiving and analysing the application ({size})")
    row_id = take_in(cfg, sessions, raw)
    with sessions() as s:
        message = s.get(Message, row_id)
        case = s.get(Case, message.case_id) if message is not None and message.case_id else None
        if case is None:
            why = message.last_error if message is not None else None
            raise StaffActionFailed(
                "the files opened no case" + (f": {why}" if why else
                                              " (no application form, request or certificate "
                                              "among them)"))
        append_audit(s, actor=name, action="accept_in_person", case=case, via="cli",
                     reason=f"现场受理: files of {folder.name} taken in as message {row_id}")
        s.commit()
        return HallResult(case.ref, case.state, row_id)


# -- export ---------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def safe_name(name: str, fallback: str = "attachment") -> str:
    """A file name for the export folder: no folders, no control characters, no leading
    dots, not too long. Never a path taken from the mail."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if not name or name in (".", ".."):
        name = fallback
    if len(name.encode("utf-8")) > 200:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        base = (stem if dot else name).encode("utf-8")[:180].decode("utf-8", "ignore")
        name = f"{base}.{ext}" if ext else base
    return name


def _unique(folder: Path, name: str, taken: set[str]) -> Path:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, n = name, 1
    while candidate.lower() in taken or (folder / candidate).exists():
        n += 1
        candidate = f"{stem}-{n}.{ext}" if ext else f"{stem}-{n}"
    taken.add(candidate.lower())
    return folder / candidate


def export_case(cfg: Config, session: Session, ref: str, folder: Path) -> list[Path]:
    """Write the case's messages (raw .eml) and their attachments into `folder`."""
    case = session.scalars(select(Case).where(Case.ref == ref.strip().upper())).first()
    if case is None:
        raise StaffActionFailed(f"no such case: {ref}")
    messages = session.scalars(select(Message).where(Message.case_id == case.id)
                               .order_by(Message.id)).all()
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for m in messages:
        if not m.sha256:
            continue
        raw = archive.load(cfg.archive_dir, m.sha256, verify=True)
        raw = bytes(raw)
        target = _unique(folder, f"message-{m.id}.eml", taken)
        target.write_bytes(raw)
        written.append(target)
        for n, part in enumerate(mime.parse_message(raw).leaves, 1):
            body = (part.content_type in ("text/plain", "text/html") and not part.filename
                    and part.disposition != "attachment")
            if body:
                continue
            name = safe_name(part.filename or "", fallback=f"part-{n}")
            target = _unique(folder, f"{m.id}-{name}", taken)
            target.write_bytes(part.decoded())
            written.append(target)
    return written
