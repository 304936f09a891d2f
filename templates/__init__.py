"""Package data, not code: this folder ships as `mailbot._templates` (see pyproject.toml)."""
