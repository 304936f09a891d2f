"""The PKI loads alone: importing it (and its tests) pulls in no other layer of mailbot.

In a fresh interpreter, so what this test run imported elsewhere does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the other layers: cases, intake, app, mailbox, rules, outbox, cli
FORBIDDEN = tuple(f"mailbot.{layer}"
                  for layer in ("cases", "intake", "app", "mailbox", "rules", "outbox", "cli"))


def _loaded_after(imports: str) -> list[str]:
    """The mailbot modules in sys.modules after `imports`, in a new interpreter."""
    code = (f"import json, sys\n{imports}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'mailbot')))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_pki_imports_no_other_layer():
    loaded = _loaded_after("import mailbot.pki.issue, mailbot.pki.crl, mailbot.pki.signer, "
                           "mailbot.pki.envelope, mailbot.pki.csr")
    assert "mailbot.pki.issue" in loaded and "mailbot.pki.csr" in loaded
    assert _forbidden(loaded) == []


def test_pki_tests_and_their_helpers_import_no_other_layer():
    """tests/pki and the helpers it uses (tests/support/pki_issue*.py) need no cases or app."""
    names = ["tests.support.pki_issue", "tests.support.pki_issue_fixtures"] + [
        f"tests.pki.{p.stem}" for p in sorted((ROOT / "tests" / "pki").glob("test_*.py"))]
    loaded = _loaded_after("\n".join(f"import {n}" for n in names))
    assert "mailbot.pki.issue" in loaded
    assert _forbidden(loaded) == []
