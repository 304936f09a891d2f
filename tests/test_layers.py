"""The layer contracts hold (DESIGN.md §2): CI refuses a back arrow between layers."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.support import layers


@pytest.mark.parametrize("contract", [*layers.FORBIDDEN, "cli-only"])
def test_layer_contract_is_kept(contract: str) -> None:
    assert layers.violations()[contract] == []


def test_every_module_belongs_to_a_layer_or_is_a_leaf() -> None:
    stray = [p for p in layers.PACKAGE.rglob("*.py")
             if layers.layer_of(layers.module_name(p)) is None]
    assert stray == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "mailbot"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_the_checker_sees_hidden_and_relative_imports(tmp_path: Path) -> None:
    """Imports inside functions, under TYPE_CHECKING and relative ones all count."""
    root = _package(tmp_path, {
        "__init__.py": "",
        "pki/__init__.py": "",
        "pki/crl.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from mailbot.cases.models import Case
            def audit():
                import mailbot.cases.audit
            """,
        "intake/__init__.py": "",
        "intake/process.py": "from ..cases import store\nfrom . import facts\n",
        "intake/analyse.py": "import importlib\nm = importlib.import_module('mailbot.rules.x')\n",
        "intake/facts.py": "",
        "app/__init__.py": "",
        "app/daemon.py": "from mailbot import cli\n",
        "cli/__init__.py": "",
        "cases/__init__.py": "",
    })
    broken = layers.violations(root)
    assert len(broken["pki"]) == 2
    assert broken["intake"] == ["mailbot.intake.analyse:2 imports mailbot.rules.x",
                                "mailbot.intake.process:1 imports mailbot.cases.store"]
    assert broken["app"] == ["mailbot.app.daemon:1 imports mailbot.cli"]
    assert broken["cli-only"] == ["mailbot.app.daemon:1 imports mailbot.cli"]
    assert ast  # the checker reads source, it never imports the modules
