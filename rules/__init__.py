"""Package data, not code: this folder ships as `mailbot._rules` (see pyproject.toml)."""
