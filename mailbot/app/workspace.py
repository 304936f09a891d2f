"""The working folders and the schema, as `mailbot init` and the first `mailbot run` make them."""

from __future__ import annotations

import mailbox

from mailbot.config import Config
from mailbot.db import upgrade
from mailbot.mailbox.url import maildir_path


def init_workspace(cfg: Config) -> list[str]:
    """Create var/, the archive, the Maildir and the schema; idempotent. Returns what was done."""
    done = []
    cfg.var_dir.mkdir(parents=True, exist_ok=True)
    cfg.archive_dir.mkdir(parents=True, exist_ok=True)
    md = maildir_path(cfg)
    if md is not None:
        mailbox.Maildir(str(md), create=True)
        done.append(f"maildir {md}")
    upgrade(cfg.database_url)
    done.append("database schema up to date")
    return done
