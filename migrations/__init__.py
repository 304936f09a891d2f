"""Package data, not code: this folder ships as `mailbot._migrations` (see pyproject.toml)."""
