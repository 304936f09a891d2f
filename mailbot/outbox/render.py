"""Templates -> the subject, text and HTML of one outgoing mail (Jinja2).

Each template NAME of `context.TEMPLATES` is three files: NAME.subject.j2, NAME.txt.j2 and
NAME.html.j2 (templates/README.txt). They are looked up in the operator's templates folder
first, then in the shipped one, so an operator may override a single file. HTML files are
autoescaped, the others not; a context key a template reads but the context lacks is an
error (StrictUndefined), as is a missing file or a syntax error, each naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from mailbot.config import DEFAULT_TEMPLATES_DIR
from mailbot.outbox.context import DIGEST, TEMPLATES, UNRELATED
from mailbot.outbox.sentences import Sentences, SentencesError
from mailbot.refs import CASE_TAG, subject_tag

PARTS = (("subject", ".subject.j2"), ("text", ".txt.j2"), ("html", ".html.j2"))
# Templates about no case; every other one names its case, so a reply joins it.
WITHOUT_REF = frozenset({UNRELATED, DIGEST})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TemplateError(Exception):
    """A template is missing, broken, or reads a key its context lacks (names the file)."""


@dataclass(frozen=True)
class Rendered:
    subject: str  # one line, carries [XM-2026-0007] when the context has a ref
    text: str
    html: str


def _autoescape(name: str | None) -> bool:
    return bool(name) and str(name).endswith(".html.j2")


class Renderer:
    """Renders the outbox's templates from the operator's folder over the shipped one."""

    def __init__(self, templates_dir: str | Path | None = None) -> None:
        folders = [Path(DEFAULT_TEMPLATES_DIR)]
        if templates_dir is not None:
            own = Path(templates_dir)
            if not own.is_dir():
                raise TemplateError(f"templates_dir {own} is not a folder")
            if own.resolve() != folders[0].resolve():
                folders.insert(0, own)
        self.folders = tuple(folders)
        try:
            self.sentences = Sentences.load(*reversed(self.folders))  # the operator's win
        except SentencesError as exc:
            raise TemplateError(str(exc)) from exc
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in self.folders], encoding="utf-8"),
            autoescape=_autoescape, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
            # No stat() of three files per mail: app/outbox_job.py makes a new Renderer when
            # a file in the templates folder changes.
            auto_reload=False)
        self.env.globals.update(to_fix=self.sentences.to_fix, to_note=self.sentences.to_note,
                                sentence=self.sentences.sentence)

    @staticmethod
    def files(template: str) -> list[str]:
        """The three files of a template: subject, text and HTML."""
        return [template + suffix for _part, suffix in PARTS]

    def _get(self, filename: str) -> jinja2.Template:
        try:
            return self.env.get_template(filename)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template file {exc.name} not found in "
                                f"{' or '.join(map(str, self.folders))}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.filename or exc.name or filename} line {exc.lineno}: "
                                f"{exc.message}") from exc

    def check(self) -> None:
        """Compile every file of every template (at start-up: a broken override fails early)."""
        for template in TEMPLATES:
            for filename in self.files(template):
                self._get(filename)

    def render(self, template: str, context: Mapping[str, Any]) -> Rendered:
        if template not in TEMPLATES:
            raise TemplateError(f"unknown template {template!r} (known: {', '.join(TEMPLATES)})")
        ref = context.get("ref")
        if not ref and template not in WITHOUT_REF:
            raise TemplateError(f"template {template} needs the case's ref in its context")
        parts: dict[str, str] = {}
        for part, suffix in PARTS:
            filename = template + suffix
            tpl = self._get(filename)
            try:
                parts[part] = tpl.render(dict(context))
            except jinja2.UndefinedError as exc:
                raise TemplateError(f"{tpl.filename or filename}: {exc.message} "
                                    "(a key the context lacks)") from exc
            except (jinja2.TemplateError, SentencesError) as exc:
                raise TemplateError(f"{tpl.filename or filename}: {exc}") from exc
        return Rendered(subject=_subject(parts["subject"], ref), text=_text(parts["text"]),
                        html=parts["html"].strip() + "\n")


def _subject(raw: str, ref: object) -> str:
    """One line; the case tag in front unless the template placed it (loop safety, joins)."""
    subject = " ".join(_CONTROL.sub(" ", raw).split())
    if ref:
        tags = {m.upper() for m in CASE_TAG.findall(subject)}
        if str(ref).upper() not in tags:
            subject = f"{subject_tag(str(ref))} {subject}".strip()
    return subject


def _text(raw: str) -> str:
    """Trailing spaces gone, at most one empty line in a row, one final newline."""
    lines = [line.rstrip() for line in raw.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"
