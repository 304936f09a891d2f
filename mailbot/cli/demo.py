"""`mailbot demo [--dir DIR]`: the whole desk once, in a new folder, with a printed summary.

The demo builds its own configuration (the embedded defaults rooted in its folder) and never
uses the one given with --config or MAILBOT_CONFIG, nor ./var.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mailbot.cli.errors import OperationFailed


def _cmd_demo(args: argparse.Namespace) -> int:
    from mailbot.app.demo import DemoFailed, DemoRefused, run_demo, summary_lines

    if not args.verbose:  # the daemon's log would bury the steps; --verbose keeps it
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    target = Path(args.dir) if args.dir else None

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_demo(target, say=say)
    except DemoRefused as exc:
        raise OperationFailed(str(exc), exc.zh) from None
    except DemoFailed as exc:
        raise OperationFailed(f"demo: {exc}", "演示未能完成") from None
    for line in summary_lines(result):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole desk once on sample applications, in a new "
                                    "folder / 演示")
    p.add_argument("--dir", metavar="DIR",
                   help="the demo folder: new or empty (default: a new temporary folder)"
                        " / 演示目录")
    p.add_argument("--verbose", action="store_true",
                   help="show the daemon's log lines on stderr / 显示运行日志")
    p.set_defaults(func=_cmd_demo)
