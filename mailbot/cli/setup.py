"""`mailbot init` and `mailbot db upgrade`: set up the working folders and the schema."""

from __future__ import annotations

import argparse

from mailbot.app.workspace import init_workspace
from mailbot.db import upgrade


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
