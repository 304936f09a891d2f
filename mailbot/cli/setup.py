"""`mailbot init` and `mailbot db upgrade`: set up the working folders and the schema;
`mailbot init --write-config FILE`: a starting configuration."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from mailbot.app.workspace import ConfigFileExists, init_workspace, write_config
from mailbot.cli.errors import OperationFailed
from mailbot.db import upgrade


def _cmd_init(args: argparse.Namespace) -> int:
    if args.write_config is not None:
        return _write_config(Path(args.write_config))
    for line in init_workspace(args.config):
        print(f"ok: {line}")
    return 0


def _write_config(path: Path) -> int:
    """Only the file: folders and schema follow once it names the production places."""
    try:
        write_config(path)
    except ConfigFileExists as exc:
        raise OperationFailed(str(exc), "配置文件已存在, 未覆盖") from None
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror or exc}",
                              "无法写入配置文件") from None
    name = shlex.quote(str(path))
    print(f"ok: wrote {path}: every key at its default, the production example commented / "
          "已写入配置文件")
    print(f"next: edit it, put the passwords in the environment, then `mailbot --config {name} "
          f"init` and `mailbot --config {name} status`")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    upgrade(args.config.database_url)
    print("ok: database schema up to date / 数据库结构已是最新")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create var/, the archive, the Maildir and the schema / 初始化")
    p.add_argument("--write-config", metavar="FILE",
                   help="only write a starting configuration to FILE (every key at its default, "
                        "the xmport@189.cn production example commented); never overwrites / "
                        "生成配置文件")
    p.set_defaults(func=_cmd_init)
    db = sub.add_parser("db", help="database maintenance / 数据库")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbsub.add_parser("upgrade", help="apply migrations (Alembic) / 升级数据库结构")
    up.set_defaults(func=_cmd_db_upgrade)
