"""The shipped rule settings: every rules/*.toml, keyed by file stem."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_RULES_DIR = Path(__file__).resolve().parent.parent.parent / "rules"


@lru_cache(maxsize=8)
def _load(rules_dir: str) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(rules_dir).glob("*.toml")):
        with path.open("rb") as fh:
            settings[path.stem] = tomllib.load(fh)
    return settings


def load_rule_settings(rules_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Settings per rules file (e.g. ["materials"], ["subject"]); read once per folder."""
    return _load(str(Path(rules_dir or DEFAULT_RULES_DIR).resolve()))
