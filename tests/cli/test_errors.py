"""One way to fail: each mistake is one line on stderr, the right exit code, no traceback,
and nothing created (read-only commands never make ./var or a database)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.cli import main
from mailbot.cli.errors import describe, report
from mailbot.config import Config
from mailbot.db import NoDatabase
from tests.support.intake import make_mail


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("MAILBOT_CONFIG", "MAILBOT_LOG_LEVEL", "MAILBOT_DATABASE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _fails(capsys: pytest.CaptureFixture[str], *argv: str, code: int) -> str:
    """Run `mailbot ARGV`; assert the exit code and exactly one line on stderr; return it."""
    rc = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert rc == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("mailbot: ")
    return lines[0]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mailbot.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- read-only commands without a database ----------------------------------------------------

@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["cases", "list"],
                                  ["cases", "list", "--json", "--state", "approved"],
                                  ["cases", "show", "XM-2026-0001"], ["audit", "verify"],
                                  ["reprocess", "--all-parked"]])
def test_read_only_command_without_database_says_how_to_start(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, *argv, code=1)
    assert "no database yet" in line and "mailbot init" in line and "--config" in line
    assert str(tmp_path / "var" / "mailbot.sqlite3") in line
    assert _files(tmp_path) == set()  # no ./var, no empty SQLite file


def test_empty_database_file_is_no_database(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "elsewhere" / "empty.sqlite3"
    db.parent.mkdir()
    db.touch()
    cfg = _toml(tmp_path, f'[database]\nurl = "sqlite:///{db}"\n')
    line = _fails(capsys, "--config", cfg, "cases", "list", code=1)
    assert "no mailbot schema" in line and "mailbot init" in line
    assert _files(tmp_path) == {"mailbot.toml", "elsewhere", "elsewhere/empty.sqlite3"}
    assert db.stat().st_size == 0


def test_read_only_commands_work_once_initialised(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    capsys.readouterr()
    assert main(["cases", "list", "--state", "approved"]) == 0
    assert "0 case(s)" in capsys.readouterr().out
    assert main(["audit", "verify"]) == 0
    assert main(["status", "--json"]) == 0


# -- configuration ---------------------------------------------------------------------------

def test_missing_config_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, "--config", "nope.toml", "status", code=2)
    assert "no such file: nope.toml" in line and "配置文件无法读取" in line
    assert _files(tmp_path) == set()


def test_missing_config_file_from_environment_is_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_CONFIG", str(tmp_path / "gone.toml"))
    line = _fails(capsys, "cases", "list", code=2)
    assert "gone.toml" in line
    assert _files(tmp_path) == set()


@pytest.mark.parametrize(("text", "expected"), [
    ("[database\nurl = 1\n", "cannot read configuration"),
    ("[mailbox]\nurll = 'x'\n", "unknown configuration key mailbox.urll"),
    ("[intake]\nworkers = 'two'\n", "intake.workers must be int"),
    ('[smtp]\nurl = "smpt://mail.example.cn"\n', "[smtp] url"),
    ('[smtp]\nurl = "file:"\n', "[smtp] url"),
    ('[mailbox]\nurl = "pop3://mail.example.cn"\n', "[mailbox] url"),
    ('[mailbox]\nurl = "imap://u:secret@host:99999/INBOX"\n', "[mailbox] url"),
    ('[database]\nurl = "postgress://mb@db/mb"\n', "[database] url"),
    ('[database]\nurl = "not a url"\n', "[database] url"),
    ('[ca]\nsigner = "hsm"\n', "[ca] signer"),
    ('[smtp]\nurl = "smtps://u:secret@smtp.189.cn:notaport"\n', "[smtp] url"),
    ('[smtp]\nurl = "smtp//u:secret@smtp.189.cn"\n', "[smtp] url"),
    ('rules_dir = "nowhere"\n', "rules_dir"),
])
def test_bad_configuration_value_is_exit_2(text: str, expected: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _toml(tmp_path, text)
    line = _fails(capsys, "--config", cfg, "status", code=2)
    assert expected in line
    assert "secret" not in line
    assert _files(tmp_path) == {"mailbot.toml"}


def test_postgresql_without_driver_names_the_extra(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if `pip install .` without the extra
    cfg = _toml(tmp_path, '[database]\nurl = "postgresql+psycopg://mb:{password}@db/mb"\n')
    line = _fails(capsys, "--config", cfg, "cases", "list", code=2)
    assert "pip install 'mailbot[postgres]'" in line


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg not installed")
def test_unreachable_database_server_is_exit_1(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _toml(tmp_path, '[database]\nurl = "postgresql+psycopg://mb@127.0.0.1:1/mb"\n')
    line = _fails(capsys, "--config", cfg, "status", code=1)
    assert "cannot open or reach the database" in line


def test_valid_file_still_loads_and_checks(tmp_path: Path) -> None:
    cfg = Config.load(_toml(tmp_path, 'rules_dir = "my-rules"\n[ca]\nsigner = "sdf"\n'
                                      '[smtp]\nurl = "smtps://u@smtp.189.cn:465"\n'))
    assert cfg.rules_dir == str(tmp_path / "my-rules")  # beside the file that names it
    assert cfg.ca.signer == "sdf" and cfg.smtp.url.startswith("smtps://")


# -- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    (["cases", "list", "--state", "bogus"], "invalid choice: 'bogus'"),
    (["--log-level", "LOUD", "status"], "invalid log level 'LOUD'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["status", "--bogus"], "unrecognized arguments: --bogus"),
    (["cases", "show"], "required: ref"),
    (["reprocess"], "--all-parked"),
])
def test_usage_mistake_is_exit_2(argv: list[str], expected: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, *argv, code=2)
    assert expected in line
    assert _files(tmp_path) == set()


def test_log_level_is_case_insensitive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_mail())
    assert main(["--log-level", "warning", "inspect", str(eml), "--json"]) == 0
    assert '"kind": "new"' in capsys.readouterr().out
    assert _files(tmp_path) == {"m.eml"}  # inspect touches no database


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert main(["--version"]) == 0
    assert "mailbot" in capsys.readouterr().out


# -- failed operations, Ctrl-C, --debug ------------------------------------------------------

@pytest.mark.parametrize(("exc", "code", "expected"), [
    (ConnectionRefusedError(111, "Connection refused"), 1, "cannot reach the server"),
    (TimeoutError("timed out"), 1, "cannot reach the server"),
    (PermissionError(13, "Permission denied", "/srv/x"), 1, "/srv/x: Permission denied"),
    (RuntimeError("boom\nsecond line"), 1, "unexpected error: RuntimeError: boom"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_failed_operation_is_one_line(exc: BaseException, code: int, expected: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert report(exc) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


def test_errors_are_mapped_by_meaning() -> None:
    from sqlalchemy.exc import OperationalError

    from mailbot.mailbox.base import MailboxError
    from mailbot.pki.errors import PkiError

    assert describe(MailboxError("LOGIN refused"))[0] == 1
    assert "mailbox: LOGIN refused" in describe(MailboxError("LOGIN refused"))[1]
    assert describe(PkiError("no CA yet"))[0] == 1
    code, line = describe(OperationalError("SELECT 1", {}, Exception("no such table: cases")))
    assert code == 1 and "mailbot db upgrade" in line
    assert describe(NoDatabase("/x/db"))[0] == 1


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no database here: `status` fails, and --debug shows where
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    assert main(["--debug", "status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("mailbot: ")


def _closed_pipe_run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before we write, as after `| head -1`
    try:
        return subprocess.run([sys.executable, "-m", "mailbot.cli", *argv], cwd=cwd,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.timeout(120)
def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    assert main(["init"]) == 0
    for argv in (["status", "--json"], ["cases", "list"]):
        proc = _closed_pipe_run(*argv, cwd=tmp_path)
        assert proc.stderr == "", proc.stderr
        assert proc.returncode == 141  # as for any program whose reader went away


@pytest.mark.timeout(120)
def test_interrupt_in_a_real_process_is_exit_130(tmp_path: Path) -> None:
    code = ("import sys, mailbot.cli.daemon as d\n"
            "def stop(args): raise KeyboardInterrupt\n"
            "d._cmd_status = stop\n"
            "from mailbot.cli import main\n"
            "sys.exit(main(['status']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 130
    assert proc.stderr.strip() == "mailbot: interrupted / 已中断"


@pytest.mark.parametrize(("rules", "expected"), [
    ("[required]\nnew = ['application_form', 'fax']\n", "unknown material(s) 'fax'"),
    ("[required]\nrenew = ['csr']\n", "unknown kind 'renew'"),
    ("[required]\nnew = ['csr']\n[required]\n", "line 3"),
])
def test_a_broken_rules_file_is_refused_before_anything_is_opened(
        rules: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "materials.toml").write_text(rules, encoding="utf-8")
    cfg = _toml(tmp_path, 'rules_dir = "rules"\n')
    line = _fails(capsys, "--config", cfg, "run", "--once", code=2)
    assert expected in line and "materials.toml" in line
    assert _files(tmp_path) == {"mailbot.toml", "rules", "rules/materials.toml"}
