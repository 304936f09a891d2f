"""`mailbot init` and `mailbot db upgrade`: set up the working folders and the schema."""

from __future__ import annotations

import argparse
import mailbox
from pathlib import Path

from mailbot.config import Config
from mailbot.db import upgrade


def maildir_path(cfg: Config) -> Path | None:
    """The local Maildir the embedded default reads, or None for IMAP."""
    url = cfg.mailbox.url
    if not url.startswith("maildir:"):
        return None
    return cfg.var_path(url[len("maildir:"):])


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


def _cmd_init(args: argparse.Namespace) -> int:
    for line in init_workspace(args.config):
        print(f"ok: {line}")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    upgrade(args.config.database_url)
    print("ok: database schema up to date / 数据库结构已是最新")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create var/, the archive, the Maildir and the schema / 初始化")
    p.set_defaults(func=_cmd_init)
    db = sub.add_parser("db", help="database maintenance / 数据库")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbsub.add_parser("upgrade", help="apply migrations (Alembic) / 升级数据库结构")
    up.set_defaults(func=_cmd_db_upgrade)
