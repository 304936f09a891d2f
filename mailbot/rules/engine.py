"""The rule engine: small named rules, an ordered table, an evaluator that survives a crash.

In the manner of GNU Mailman's rules and chains: each rule is an object with a `name`, a
one-line `description` and a `check(view, params)` that returns findings; the evaluator walks
the table in order, records which rules ran, which were switched off (rules/rules.toml) and
which were skipped (no database, or a kind of message they do not judge), and turns a rule
that raises into a `rule_failed` finding naming it, then goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mailbot.config import DEFAULT_RULES_DIR, ConfigError, load_rule_settings
from mailbot.findings import Finding
from mailbot.rules.view import CaseView

log = logging.getLogger(__name__)

RULES_FILE = "rules.toml"
CASE_KINDS: tuple[str, ...] = ("new", "revoke")


class Rule:
    """One check. Subclasses set the class attributes and write `check`.

    `codes` are the finding codes this rule is the one home of: when it runs (or is switched
    off) any copy intake made of them gives way to the rule's verdict.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_database: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = CASE_KINDS
    codes: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}

    def check(self, view: CaseView, params: Mapping[str, Any]) -> list[Finding]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


@dataclass(frozen=True)
class RuleRun:
    """What happened to one rule: ran, off, skipped (with why) or failed."""

    name: str
    status: str  # ran | off | skipped | failed
    reason: str = ""
    findings: int = 0


@dataclass
class Evaluation:
    """The findings of all rules in table order, and what became of each rule."""

    findings: list[Finding] = field(default_factory=list)
    runs: list[RuleRun] = field(default_factory=list)
    decided: set[str] = field(default_factory=set)  # codes of rules that ran or were off

    def _named(self, status: str) -> list[str]:
        return [r.name for r in self.runs if r.status == status]

    @property
    def ran(self) -> list[str]:
        return self._named("ran")

    @property
    def off(self) -> list[str]:
        return self._named("off")

    @property
    def skipped(self) -> list[str]:
        return self._named("skipped")

    @property
    def failed(self) -> list[str]:
        return self._named("failed")

    @property
    def missing(self) -> list[str]:
        """The materials the `missing_material` findings name, in order."""
        return [str(f.facts.get("material")) for f in self.findings
                if f.code == "missing_material"]

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocks]

    def to_json(self) -> dict[str, Any]:
        return {"ran": self.ran, "off": self.off,
                "skipped": {r.name: r.reason for r in self.runs if r.status == "skipped"},
                "failed": self.failed}


# ---------------------------------------------------------------------------------------------
# settings: rules/rules.toml


@dataclass(frozen=True)
class RuleSettings:
    """Per rule: on or off, and its parameters (the rule's defaults under the file's values)."""

    enabled: Mapping[str, bool]
    params: Mapping[str, Mapping[str, Any]]
    source: str = ""

    def is_on(self, name: str) -> bool:
        return self.enabled.get(name, True)

    def of(self, rule: Rule) -> Mapping[str, Any]:
        return self.params.get(rule.name) or dict(rule.defaults)


def _type_name(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(type(value), type(value).__name__)


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, list | tuple):
        if not isinstance(value, list):
            return False
        kinds = {type(x) for x in default}
        return not kinds or all(type(x) in kinds for x in value)
    return isinstance(value, type(default))


def _line_of(text: str | None, section: str, key: str | None = None) -> int | None:
    """The line of `[section]` (or of `key = ` inside it) in the file's text, when found."""
    if not text:
        return None
    lines = text.splitlines()
    head = re.compile(rf"^\s*\[\s*(?:rules\.)?{re.escape(section)}\s*\]")
    start = next((i for i, line in enumerate(lines) if head.match(line)), None)
    if start is None:
        return None
    if key is None:
        return start + 1
    pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for i in range(start + 1, len(lines)):
        if re.match(r"^\s*\[", lines[i]):
            break
        if pat.match(lines[i]):
            return i + 1
    return start + 1


def parse_rule_settings(data: Mapping[str, Any] | None, rules: Sequence[Rule],
                        where: str = RULES_FILE, text: str | None = None) -> RuleSettings:
    """Check one rules.toml table against the rules; ConfigError names the file and line."""
    known = {r.name: r for r in rules}
    enabled: dict[str, bool] = {}
    params: dict[str, dict[str, Any]] = {r.name: dict(r.defaults) for r in rules}

    def fail(message: str, section: str, key: str | None = None) -> ConfigError:
        line = _line_of(text, section, key)
        return ConfigError(f"rules file {where}{f' line {line}' if line else ''}: {message}")

    for name, table in (data or {}).items():
        if name not in known:
            raise fail(f"unknown rule [{name}] (known: {', '.join(known)})", name)
        if not isinstance(table, Mapping):
            raise fail(f"[{name}] must be a table (enabled = true, parameters ...)", name)
        rule = known[name]
        for key, value in table.items():
            if key == "enabled":
                if not isinstance(value, bool):
                    raise fail(f"[{name}] enabled must be true or false", name, key)
                enabled[name] = value
                continue
            if key not in rule.defaults:
                allowed = ", ".join(["enabled", *rule.defaults])
                raise fail(f"[{name}] unknown parameter {key!r} (allowed: {allowed})", name, key)
            default = rule.defaults[key]
            if not _type_ok(default, value):
                raise fail(f"[{name}] {key} must be {_type_name(default)}"
                           + (" of strings" if isinstance(default, list) else ""), name, key)
            params[name][key] = list(value) if isinstance(value, list) else value
    return RuleSettings(enabled, params, where)


def rule_settings(settings: Mapping[str, Any] | RuleSettings | None = None,
                  rules: Sequence[Rule] | None = None, *,
                  rules_dir: str | Path | None = None) -> RuleSettings:
    """RuleSettings from all rule settings (`load_rule_settings`: one entry per file stem).

    With `rules_dir`, an error names the line of rules.toml where it can be found. Rules that
    read another file (materials: rules/materials.toml) get its values as parameters here.
    """
    if isinstance(settings, RuleSettings):
        return settings
    if rules is None:
        from mailbot.rules.table import RULES
        rules = RULES
    all_settings = settings or {}
    path = Path(rules_dir or DEFAULT_RULES_DIR) / RULES_FILE
    text = None
    if rules_dir is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            text = None
    parsed = parse_rule_settings(all_settings.get("rules"), rules,
                                 str(path) if rules_dir is not None else RULES_FILE, text)
    for rule in rules:  # a rule may take parameters from its own file (materials.toml)
        extra = getattr(rule, "file_params", None)
        if extra is not None:
            parsed.params[rule.name].update(extra(all_settings))  # type: ignore[index]
    return parsed


def load_rules(rules_dir: str | Path | None = None,
               rules: Sequence[Rule] | None = None) -> RuleSettings:
    """The rules folder's settings, checked; a bad file raises ConfigError naming it and the
    line (TOML syntax errors name the line and column themselves)."""
    folder = Path(rules_dir or DEFAULT_RULES_DIR)
    return rule_settings(load_rule_settings(folder), rules, rules_dir=folder)


# ---------------------------------------------------------------------------------------------
# evaluation


def rule_failed(rule: Rule, exc: BaseException) -> Finding:
    return Finding("rule_failed", "warn",
                   f"rule {rule.name} failed: {type(exc).__name__}: {exc}"[:300],
                   {"rule": rule.name})


def evaluate(view: CaseView, settings: Mapping[str, Any] | RuleSettings | None = None, *,
             rules: Iterable[Rule] | None = None) -> Evaluation:
    """Run the table on `view`; never raises for a rule's sake."""
    if rules is None:
        from mailbot.rules.table import RULES
        rules = RULES
    rules = list(rules)
    conf = rule_settings(settings, rules)
    out = Evaluation()
    for rule in rules:
        if not conf.is_on(rule.name):
            out.runs.append(RuleRun(rule.name, "off", "switched off in rules.toml"))
            out.decided.update(rule.codes)
            continue
        if rule.needs_database and not view.database:
            out.runs.append(RuleRun(rule.name, "skipped", "needs the database"))
            continue
        if view.kind not in rule.kinds:
            out.runs.append(RuleRun(rule.name, "skipped", f"does not judge {view.kind} mail"))
            continue
        try:
            found = list(rule.check(view, conf.of(rule)) or [])
            if not all(isinstance(f, Finding) for f in found):
                raise TypeError("check returned something other than findings")
        except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
            log.exception("rule %s failed", rule.name)
            out.findings.append(rule_failed(rule, exc))
            out.runs.append(RuleRun(rule.name, "failed", f"{type(exc).__name__}: {exc}"))
            continue
        out.findings.extend(found)
        out.decided.update(rule.codes)
        out.runs.append(RuleRun(rule.name, "ran", findings=len(found)))
    return out


def merge_findings(intake: Iterable[Finding], evaluation: Evaluation) -> list[Finding]:
    """Intake's own findings, then the rules': a code a rule decided has one home, the rule.

    `unparseable_message` stays last, as it always was.
    """
    own = [f for f in intake if f.code not in evaluation.decided]
    last = [f for f in own if f.code == "unparseable_message"]
    first = [f for f in own if f.code != "unparseable_message"]
    return first + list(evaluation.findings) + last
