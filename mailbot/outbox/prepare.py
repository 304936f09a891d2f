"""Turn an outbox row into the bytes SMTP carries: render its template, add its files and, for
the issued and revoked replies, the notice PDF; then compose the MIME message."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailbot import clock
from mailbot.outbox import context as ctx
from mailbot.outbox.compose import compose
from mailbot.outbox.models import OutboxAttachment, OutboxMessage
from mailbot.outbox.notice import render_notice
from mailbot.outbox.render import Renderer

PDF_TYPE = "application/pdf"
NOTICE_TEMPLATES = frozenset({ctx.ISSUED, ctx.REVOKED})  # these carry the 告知书


# The files of a row, in order (a Core statement, compiled once).
_FILES = (select(OutboxAttachment.filename, OutboxAttachment.content_type, OutboxAttachment.data)
          .where(OutboxAttachment.outbox_id == bindparam("b_id"))
          .order_by(OutboxAttachment.position, OutboxAttachment.id))


class Preparer:
    """Renders rows with one template set (the operator's folder over the shipped one)."""

    def __init__(self, templates_dir: str | Path | None = None, *, notice_font: str = "",
                 loop_marker: str = "") -> None:
        self.renderer = Renderer(templates_dir)
        self.notice_font = notice_font
        self.loop_marker = loop_marker

    def __call__(self, session: Session, row: OutboxMessage) -> bytes:
        context = dict(row.context)
        if "reason" in context and row.template == ctx.REVOKED:  # the code, said in Chinese
            context["reason_text"] = self.renderer.sentences.labels["revocation_reasons"].get(
                str(context["reason"]), "")
        rendered = self.renderer.render(row.template, context)
        files = [tuple(f) for f in session.execute(_FILES, {"b_id": row.id})]
        if row.template in NOTICE_TEMPLATES:
            pdf = render_notice(row.template, context, font=self.notice_font)
            files.append((ctx.NOTICE_FILENAME, PDF_TYPE, pdf))
        return compose(from_addr=row.from_addr, to_addrs=list(row.to_addrs),
                       subject=rendered.subject, text=rendered.text, html=rendered.html,
                       message_id=row.message_id, in_reply_to=row.in_reply_to,
                       references=list(row.references or []), attachments=files,
                       date=clock.now(), loop_marker=self.loop_marker)
