"""Helpers shared by the intake pipeline tests: small messages, configs, source wrappers."""

from __future__ import annotations

import uuid
from email.header import Header
from pathlib import Path
from typing import Any

from mailbot.config import Config
from mailbot.mailbox.base import MailboxError


def make_mail(*, subject: str = "厦门测试科技有限公司+数字证书申办", message_id: str | None = None,
              body: str = "您好，附件为申请材料。", pad: int = 0, sender: str = "applicant@example.cn",
              extra_headers: str = "") -> bytes:
    """A small plain-text message (pad: that many extra body bytes)."""
    mid = message_id or f"<{uuid.uuid4().hex}@example.cn>"
    subj = Header(subject, "utf-8").encode(linesep="\r\n")
    text = body + ("\n" + "x" * pad if pad else "")
    head = (f"From: Applicant <{sender}>\r\nTo: xmport@189.cn\r\nSubject: {subj}\r\n"
            f"Message-ID: {mid}\r\nDate: Wed, 25 Nov 2026 09:00:00 +0800\r\n"
            f"MIME-Version: 1.0\r\n{extra_headers}"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
    return head.encode("utf-8") + text.replace("\n", "\r\n").encode("utf-8") + b"\r\n"


def make_config(tmp_path: Path, db_url: str, mailbox_url: str, **intake: Any) -> Config:
    cfg = Config()
    cfg.base_dir = str(tmp_path)
    cfg.paths.var_dir = str(tmp_path / "var")
    cfg.database.url = db_url
    cfg.mailbox.url = mailbox_url
    cfg.intake.workers = 2
    for key, value in intake.items():
        setattr(cfg.intake, key, value)
    return cfg


def write_config(path: Path, cfg: Config) -> Path:
    """The same settings as a TOML file, for `mailbot --config FILE` subprocesses."""
    def q(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[mailbox]", f"url = {q(cfg.mailbox.url)}", "[database]",
             f"url = {q(cfg.database.url)}", "[paths]", f"var_dir = {q(cfg.paths.var_dir)}",
             "[intake]"]
    for key in ("max_message_bytes", "max_attempts", "workers", "fetch_batch", "sweep_seconds"):
        lines.append(f"{key} = {getattr(cfg.intake, key)}")
    for key in ("processed_folder", "failed_folder", "processed_keyword"):
        lines.append(f"{key} = {q(getattr(cfg.intake, key))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class NoMoveSource:
    """A real source that pretends the server lacks MOVE (and UIDPLUS): keyword fallback."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def supports_move(self) -> bool:
        return False


class BrokenMoveSource(NoMoveSource):
    """A real source whose server refuses every move (a full quota, a refused CREATE)."""

    def supports_move(self) -> bool:
        return True

    def move(self, refs: Any, folder: str) -> None:
        raise MailboxError("NO [OVERQUOTA] Quota exceeded (mailbox for user is full)")


class WatchedMoveSource(NoMoveSource):
    """Calls `before_move(refs)` first, so a test can look at the database at that moment."""

    def __init__(self, inner: Any, before_move: Any) -> None:
        super().__init__(inner)
        self._before = before_move

    def supports_move(self) -> bool:
        return self._inner.supports_move()

    def move(self, refs: Any, folder: str) -> None:
        self._before(list(refs))
        self._inner.move(refs, folder)
