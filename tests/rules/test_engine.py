"""The rule engine: the table, evaluation (ran, off, skipped, a crash contained), rules.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.config import DEFAULT_RULES_DIR, ConfigError
from mailbot.findings import Finding
from mailbot.intake.facts import MessageFacts
from mailbot.rules.engine import (
    Evaluation,
    Rule,
    evaluate,
    load_rules,
    merge_findings,
    parse_rule_settings,
)
from mailbot.rules.table import RULES, RULES_BY_NAME, describe
from mailbot.rules.view import CaseView, view_from_facts

REPO = Path(__file__).resolve().parents[2]


class Boom(Rule):
    name = "boom"
    description = "always crashes"

    def check(self, view, params):  # noqa: ANN001, ANN201
        raise RuntimeError("kaput")


class Says(Rule):
    name = "says"
    description = "one warning"
    codes = ("said",)
    defaults = {"word": "hello", "times": 1}

    def check(self, view, params):  # noqa: ANN001, ANN201
        return [Finding("said", "warn", params["word"])] * params["times"]


class NeedsDb(Says):
    name = "needs_db"
    needs_database = True


def test_table_names_are_unique_and_described() -> None:
    assert len(RULES_BY_NAME) == len(RULES)
    for rule in RULES:
        assert rule.name and rule.description and rule.codes, rule
    rows = describe()
    assert rows[0]["name"] == "subject_format"
    assert {r["name"] for r in rows if r["needs_database"]} == {
        "already_certified", "renamed_organisation", "revoke_foreign_certificate"}


def test_a_crashing_rule_is_contained_and_named() -> None:
    view = CaseView(kind="new")
    result = evaluate(view, {}, rules=[Says(), Boom(), Says()])
    assert [f.code for f in result.findings] == ["said", "rule_failed", "said"]
    failed = result.findings[1]
    assert failed.severity == "warn" and "boom" in failed.detail
    assert failed.facts["rule"] == "boom"
    assert result.ran == ["says", "says"] and result.failed == ["boom"]


def test_off_skipped_and_kind() -> None:
    conf = parse_rule_settings({"says": {"enabled": False}}, [Says(), NeedsDb()])
    result = evaluate(CaseView(kind="new"), conf, rules=[Says(), NeedsDb()])
    assert result.off == ["says"] and result.skipped == ["needs_db"]
    assert result.findings == [] and "said" in result.decided
    result = evaluate(CaseView(kind="new", database=True), conf, rules=[Says(), NeedsDb()])
    assert result.ran == ["needs_db"]
    result = evaluate(CaseView(kind="reply"), {}, rules=[Says()])
    assert result.skipped == ["says"] and result.to_json()["skipped"]["says"].startswith("does")


def test_parameters_come_from_the_file() -> None:
    conf = parse_rule_settings({"says": {"word": "hi", "times": 2}}, [Says()])
    result = evaluate(CaseView(kind="new"), conf, rules=[Says()])
    assert [f.detail for f in result.findings] == ["hi", "hi"]


def test_a_single_message_skips_the_database_rules() -> None:
    result = evaluate(view_from_facts(MessageFacts(kind="new")))
    skipped = result.to_json()["skipped"]
    assert {k for k, why in skipped.items() if why == "needs the database"} == {
        "already_certified", "renamed_organisation", "revoke_foreign_certificate"}
    assert set(skipped) - {"already_certified", "renamed_organisation",
                           "revoke_foreign_certificate"} == {"revoke_serial_mismatch"}
    assert "materials" in result.ran and result.failed == []
    assert len(result.missing) == 6


def test_merge_gives_a_decided_code_one_home() -> None:
    intake = [Finding("attachment_rejected", "warn", "zip"),
              Finding("subject_format", "warn", "intake's view"),
              Finding("unparseable_message", "reject", "x")]
    result = Evaluation(findings=[Finding("missing_material", "missing", "m")],
                        decided={"subject_format", "missing_material"})
    assert [f.code for f in merge_findings(intake, result)] == [
        "attachment_rejected", "missing_material", "unparseable_message"]


def test_shipped_rules_file_equals_the_defaults() -> None:
    conf = load_rules()
    for rule in RULES:
        assert conf.is_on(rule.name)
        for key, value in rule.defaults.items():
            assert conf.params[rule.name][key] == value, (rule.name, key)
    text = (DEFAULT_RULES_DIR / "rules.toml").read_text(encoding="utf-8")
    for rule in RULES:  # every rule is listed, so the operator sees it
        assert f"[{rule.name}]" in text


def _rules_dir(tmp_path: Path, edit: tuple[str, str]) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__*"))
    path = folder / "rules.toml"
    text = path.read_text(encoding="utf-8")
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    return folder


def _line(folder: Path, needle: str) -> int:
    lines = (folder / "rules.toml").read_text(encoding="utf-8").splitlines()
    return next(i + 1 for i, line in enumerate(lines) if needle in line)


@pytest.mark.parametrize("edit,needle,words", [
    (("[cn_mismatch]", "[cn_mismatsch]"), "[cn_mismatsch]", "unknown rule [cn_mismatsch]"),
    (("renewal_window_days = 90", "renewal_window_days = \"90\""), "renewal_window_days",
     "must be an integer"),
    (("renewal_window_days = 90", "renewal_days = 90"), "renewal_days", "unknown parameter"),
    (('prefixes = ["3502"', 'prefixes = [3502'), "prefixes", "list of strings"),
    (("(reject)\nenabled = true\n", "(reject)\nenabled = 1\n"), "enabled = 1",
     "true or false"),
])
def test_a_bad_rules_file_names_file_and_line(tmp_path: Path, edit, needle, words) -> None:
    folder = _rules_dir(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_rules(folder)
    message = str(err.value)
    assert str(folder / "rules.toml") in message and words in message
    assert f"line {_line(folder, needle)}:" in message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    folder = _rules_dir(tmp_path, ("(reject)\nenabled = true\n", "(reject)\nenabled = tru\n"))
    with pytest.raises(ConfigError, match=r"rules\.toml.*line \d+"):
        load_rules(folder)


@pytest.mark.timeout(60)
def test_mailbot_refuses_a_bad_rules_file_at_start_up(tmp_path: Path) -> None:
    folder = _rules_dir(tmp_path, ("[cn_mismatch]", "[cn_mismatsch]"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'rules_dir = "{folder}"\n[paths]\nvar_dir = "{tmp_path / "var"}"\n',
                   encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "--config", str(cfg), "status"],
                          capture_output=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    err = proc.stderr.decode("utf-8").strip()
    assert len(err.splitlines()) == 1 and "cn_mismatsch" in err and "line" in err
    assert not (tmp_path / "var").exists()


def test_switching_a_rule_off_in_inspect() -> None:
    from mailbot.app.inspection import inspect_message
    from mailbot.config import load_rule_settings
    raw = (REPO / "tests" / "golden" / "021.eml").read_bytes()
    settings = dict(load_rule_settings())
    assert "subject_format" in [f.code for f in inspect_message(raw, settings).findings]
    settings["rules"] = {"subject_format": {"enabled": False}}
    assert "subject_format" not in [f.code for f in inspect_message(raw, settings).findings]
