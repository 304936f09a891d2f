"""Finding code -> the one Chinese sentence a reply says about it.

The sentences live in one data file, `templates/findings.toml` (its header says the format);
an operator's templates folder may hold its own, whose entries replace the shipped ones code
by code. Blocking findings (`reject`, `missing`) are always said; a `warn` finding is said to
the applicant only where its entry has `tell = true` (`subject_format` never is).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, Template, TemplateError

from mailbot.config import DEFAULT_TEMPLATES_DIR

SENTENCES_FILE = "findings.toml"
LABEL_TABLES = ("materials", "roles", "fields", "attachment_reasons", "revocation_reasons")
QUOTE_MAX = 60  # characters of an applicant's value quoted in a sentence: keeps it one line
# Said of a code with no entry (a code added without its sentence): never silent for the applicant.
FALLBACK = "申请中有一项需要处理（{code}），工作人员将与您电话联系说明。"


class SentencesError(ValueError):
    """findings.toml is unreadable or an entry is wrong; the message names the file and code."""


@dataclass(frozen=True)
class Entry:
    code: str
    template: Template
    tell: bool
    source: str  # the file it came from, for error messages


def _field(finding: Any, name: str, default: Any = None) -> Any:
    # Findings come as JSON dicts (the outbox context) or as mailbot.findings.Finding.
    if isinstance(finding, Mapping):
        return finding.get(name, default)
    return getattr(finding, name, default)


def _quote(value: object) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    if len(text) > QUOTE_MAX:
        text = text[:QUOTE_MAX - 1] + "…"
    return f"「{text}」" if text else ""


class Sentences:
    """The sentences of every finding code, and which warnings the applicant is told."""

    def __init__(self, entries: Mapping[str, Entry],
                 labels: Mapping[str, Mapping[str, str]]) -> None:
        self.entries = dict(entries)
        self.labels = {t: dict(labels.get(t, {})) for t in LABEL_TABLES}
        self.helpers = self._helpers()  # made once: every sentence of every mail uses them

    @classmethod
    def load(cls, *folders: str | Path) -> Sentences:
        """The findings.toml of each folder in turn, later folders replacing earlier entries."""
        env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        entries: dict[str, Entry] = {}
        labels: dict[str, dict[str, str]] = {t: {} for t in LABEL_TABLES}
        loaded = 0
        for folder in folders:
            path = Path(folder) / SENTENCES_FILE
            if not path.is_file():
                continue
            data = _read(path)
            loaded += 1
            for table, values in (data.get("labels") or {}).items():
                if table not in LABEL_TABLES or not isinstance(values, dict):
                    raise SentencesError(f"{path}: [labels.{table}] is not one of "
                                         f"{', '.join(LABEL_TABLES)}")
                labels[table].update({str(k): str(v) for k, v in values.items()})
            for code, entry in (data.get("codes") or {}).items():
                entries[code] = _entry(env, path, code, entry)
        if not loaded:
            raise SentencesError(f"no {SENTENCES_FILE} in {', '.join(map(str, folders))}")
        return cls(entries, labels)

    # -- labels (the helpers a sentence reads) ----------------------------------------------
    def _label(self, table: str, key: object) -> str:
        if key is None or key == "":
            return ""
        return self.labels[table].get(str(key), str(key))

    def _labels(self, table: str, keys: object) -> str:
        if not isinstance(keys, Sequence) or isinstance(keys, str):
            return self._label(table, keys)
        return "、".join(self._label(table, k) for k in keys if k)

    def _helpers(self) -> dict[str, Any]:
        return {
            "material": lambda k: self._label("materials", k) or "一项申请材料",
            "materials": lambda ks: self._labels("materials", ks),
            "role": lambda k: self._label("roles", k),
            "field": lambda k: self._label("fields", k),
            "fields": lambda ks: self._labels("fields", ks),
            "attachment_reason": lambda k: self._label("attachment_reasons", k) or "无法打开",
            "quote": _quote,
        }

    # -- the sentences ------------------------------------------------------------------------
    def sentence(self, finding: Any) -> str:
        """The one sentence of a finding (a JSON dict or a Finding); empty means "say nothing"."""
        code = str(_field(finding, "code", ""))
        entry = self.entries.get(code)
        if entry is None:
            return FALLBACK.format(code=code)
        facts = _field(finding, "facts") or {}
        values = {"facts": dict(facts) if isinstance(facts, Mapping) else {},
                  "detail": _field(finding, "detail", "") or "", "code": code,
                  "severity": _field(finding, "severity", "") or "", **self.helpers}
        try:
            text = entry.template.render(values)
        except TemplateError as exc:
            raise SentencesError(f"{entry.source} [codes.{code}]: {exc}") from exc
        # One line: a line break in the TOML string must not split the sentence.
        return "".join(part.strip() for part in text.splitlines()).strip()

    def blocks(self, finding: Any) -> bool:
        return _field(finding, "severity") in ("reject", "missing")

    def told(self, finding: Any) -> bool:
        """Whether the applicant hears of it: every blocking finding; warnings with tell."""
        if self.blocks(finding):
            return True
        entry = self.entries.get(str(_field(finding, "code", "")))
        return entry is not None and entry.tell

    def to_fix(self, findings: Iterable[Any]) -> list[str]:
        """One sentence per blocking finding, in order, each said once."""
        return _unique(self.sentence(f) for f in findings or () if self.blocks(f))

    def to_note(self, findings: Iterable[Any]) -> list[str]:
        """The warnings the applicant is told, one sentence each, said once."""
        return _unique(self.sentence(f) for f in findings or ()
                       if not self.blocks(f) and self.told(f))


def _unique(sentences: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in sentences:
        if s and s not in out:  # the same file missing twice is said once
            out.append(s)
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SentencesError(f"{path}: {exc}") from exc


def _entry(env: Environment, path: Path, code: str, entry: object) -> Entry:
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        raise SentencesError(f"{path} [codes.{code}]: needs text = \"...\"")
    unknown = set(entry) - {"text", "tell"}
    if unknown:
        raise SentencesError(f"{path} [codes.{code}]: unknown key(s) {', '.join(sorted(unknown))}")
    tell = entry.get("tell", False)  # an unmarked warning stays with staff
    if not isinstance(tell, bool):
        raise SentencesError(f"{path} [codes.{code}]: tell must be true or false")
    try:
        template = env.from_string(entry["text"])
    except TemplateError as exc:
        raise SentencesError(f"{path} [codes.{code}]: {exc}") from exc
    return Entry(code, template, tell, str(path))


def load_sentences(templates_dir: str | Path | None = None) -> Sentences:
    """The shipped sentences, with those of an operator's templates folder over them."""
    folders: list[Path] = [DEFAULT_TEMPLATES_DIR]
    if templates_dir is not None and Path(templates_dir).resolve() != \
            DEFAULT_TEMPLATES_DIR.resolve():
        folders.append(Path(templates_dir))
    return Sentences.load(*folders)
