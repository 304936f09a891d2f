"""Golden files: each tests/golden/NNN.eml analysed must give the JSON in NNN.json.

The pairs are made by tests/golden/make_golden.py from the builders, the JSON reasoned out by
hand there. `detail` is compared where the expectation is not "*"; a CSR subject as a set of
RDNs (the order is the checker's business).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailbot.app.inspection import inspect_message

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("[0-9][0-9][0-9].eml"))


def _rdns(subject: str) -> set[str]:
    return {part.strip() for part in subject.replace("+", ",").split(",") if part.strip()}


def _normalise(got: dict[str, Any], want: dict[str, Any]) -> tuple[dict, dict]:
    got, want = json.loads(json.dumps(got)), json.loads(json.dumps(want))
    for g, w in zip(got["findings"], want["findings"], strict=False):
        if w.get("detail") == "*":
            assert isinstance(g.get("detail"), str) and g["detail"], g
            g["detail"] = "*"
    if got.get("csr") and want.get("csr"):
        assert _rdns(got["csr"]["subject"]) == _rdns(want["csr"]["subject"])
        got["csr"]["subject"] = want["csr"]["subject"]
    return got, want


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    raw = (GOLDEN / f"{name}.eml").read_bytes()
    want = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    got = inspect_message(raw).to_inspect_json()
    assert set(got) == {"kind", "company", "case_ref", "attachments", "missing", "csr", "form",
                        "findings"}
    got, want = _normalise(got, want)
    assert got == want


def test_golden_set_is_there() -> None:
    assert len(CASES) >= 20


@pytest.mark.timeout(60)
def test_inspect_command_prints_the_same_json(tmp_path: Path) -> None:
    """The CLI path: mapped file, UTF-8 output, exit 0, no mailbox or database touched."""
    name = "001"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nvar_dir = "{tmp_path / "var"}"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "inspect",
                           str(GOLDEN / f"{name}.eml"), "--json"],
                          capture_output=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    got = json.loads(proc.stdout.decode("utf-8"))
    want = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    rules = got.pop("rules")  # added to the contract keys: which rules ran, off, skipped
    assert "materials" in rules["ran"] and rules["failed"] == []
    assert rules["skipped"]["already_certified"] == "needs the database"
    got, want = _normalise(got, want)
    assert got == want
    assert "厦门" in proc.stdout.decode("utf-8")  # ensure_ascii=False
    assert not (tmp_path / "var").exists()


@pytest.mark.timeout(60)
def test_inspect_empty_file_and_human_summary(tmp_path: Path) -> None:
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "inspect", str(empty), "--json"],
                          capture_output=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert [f["code"] for f in data["findings"]] == ["unparseable_message"]
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "inspect",
                           str(GOLDEN / "001.eml")], capture_output=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 0
    text = proc.stdout.decode("utf-8")
    assert "kind" in text and "新办" in text


@pytest.mark.timeout(60)
def test_inspect_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "inspect",
                           str(tmp_path / "nope.eml"), "--json"], capture_output=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stdout == b""
