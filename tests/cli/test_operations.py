"""Operations: `mailbot init --write-config FILE` (and config.example.toml, its output), the
progress of long staff commands, the systemd unit and environment file in contrib/, and the
operator's guide docs/OPERATIONS.md, whose every command must exist."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re
import shlex
import subprocess
import time
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import update

from mailbot.app.notices import app_sessions
from mailbot.app.reprocess import reprocess
from mailbot.app.workspace import config_text
from mailbot.cli import main
from mailbot.cli.logs import ProgressLine, set_up_logging
from mailbot.cli.main import build_parser, load_config
from mailbot.config import Config
from mailbot.db import make_engine
from mailbot.intake.ingest import ingest
from mailbot.intake.models import MESSAGE_PARKED, Message
from mailbot.mailbox.url import parse_mailbox_url, source_from_config
from mailbot.outbox.transport import SmtpTransport, transport_from_url
from tests.support.formbuilder import FILLED, build_form
from tests.support.intake import make_config, make_mail, write_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)
KEY_LINE = re.compile(r"^#(?P<key>[a-z0-9_]+) = ")


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("MAILBOT_CONFIG", "MAILBOT_LOG_LEVEL", "MAILBOT_LOG_FORMAT",
                "MAILBOT_DATABASE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _at_defaults(cfg: Config) -> bool:
    return replace(cfg, base_dir=".") == replace(Config(), base_dir=".")


def _uncommented(text: str, *, production: bool) -> str:
    """The file with its default lines (production=False) or its production lines uncommented:
    the production lines are the key lines under a `# production` comment, up to a blank line."""
    out, in_production = [], False
    for line in text.splitlines():
        if line.startswith("# production"):
            in_production = True
        elif not line.strip():
            in_production = False
        if KEY_LINE.match(line) and in_production == production:
            line = line[1:]
        out.append(line)
    return "\n".join(out) + "\n"


# -- init --write-config -------------------------------------------------------------------------
def test_write_config_writes_every_default_and_only_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc" / "mailbot.toml"
    target.parent.mkdir()
    assert main(["init", "--write-config", str(target)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: wrote {target}") and f"--config {target} init" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc"]  # no var/, no database
    cfg = Config.load(target)
    assert _at_defaults(cfg) and cfg.base_dir == str(target.parent)
    assert _at_defaults(load_config(str(target)))  # as `mailbot --config FILE status` reads it
    assert main(["--config", str(target), "init"]) == 0  # and plain init goes on as before
    assert (target.parent / "var" / "mailbot.sqlite3").is_file()


def test_write_config_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mailbot.toml"
    target.write_text("# mine\n", encoding="utf-8")
    for path, expected in ((target, "exists"), (tmp_path / "no" / "m.toml", "cannot write")):
        assert main(["init", "--write-config", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert target.read_text(encoding="utf-8") == "# mine\n"


def test_config_example_is_the_written_file() -> None:
    example = (REPO / "config.example.toml").read_text(encoding="utf-8")
    assert example == config_text(), (
        "config.example.toml is generated: python3 -m mailbot.app.workspace > config.example.toml")


def test_every_key_is_listed_with_its_default(tmp_path: Path) -> None:
    import tomllib

    text = _uncommented(config_text(), production=False)
    data = tomllib.loads(text)
    defaults = Config()
    sections = {f.name for f in fields(defaults) if is_dataclass(getattr(defaults, f.name))}
    assert set(data) == sections
    for name in sections:
        assert set(data[name]) == {f.name for f in fields(getattr(defaults, name))}, name
    path = tmp_path / "all.toml"
    path.write_text(text, encoding="utf-8")
    assert _at_defaults(Config.load(path))


def test_the_production_lines_make_a_valid_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg (pip install '.[postgres]') is needed for the PostgreSQL URL")
    path = tmp_path / "production.toml"
    path.write_text(_uncommented(config_text(), production=True), encoding="utf-8")
    monkeypatch.setenv("MAILBOT_DATABASE_PASSWORD", "db-secret")
    cfg = load_config(str(path))  # the checks `mailbot --config FILE status` makes
    mailbox = parse_mailbox_url(cfg.mailbox.url, environ={"MAILBOT_IMAP_PASSWORD": "code"})
    assert (mailbox.scheme, mailbox.user, mailbox.host, mailbox.port, mailbox.folder) == (
        "imaps", "xmport@189.cn", "imap.189.cn", 993, "INBOX")
    assert mailbox.password == "code"
    smtp = transport_from_url(cfg.smtp.url, password="code", timeout=5, base_dir=tmp_path)
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.security, smtp.user, smtp.host, smtp.port) == ("tls", "xmport@189.cn",
                                                                "smtp.189.cn", 465)
    assert cfg.database_url == "postgresql+psycopg://mailbot:db-secret@127.0.0.1:5432/mailbot"
    assert cfg.var_dir == Path("/var/lib/mailbot")
    assert cfg.outbox.staff_addresses and cfg.intake == Config().intake


# -- progress ------------------------------------------------------------------------------------
def test_progress_is_throttled_and_ends_with_a_final_line() -> None:
    stream = io.StringIO()
    progress = ProgressLine("reprocess", every=0.3, stream=stream)
    progress(1, 10, "messages")
    assert stream.getvalue() == ""  # nothing in the first `every` seconds
    time.sleep(0.4)
    progress(2, 10, "messages")
    progress(3, 10, "messages")  # within `every` of the last line: not printed
    progress.finish()
    first, last = stream.getvalue().splitlines()
    assert first.startswith("reprocess: 2/10 messages (0.")
    assert last.startswith("reprocess: done: 3/10 messages in 0.")


def test_progress_ticks_while_the_work_is_silent() -> None:
    """A long step that reports nothing new still shows it is alive: the last state again,
    with the time, every `quiet` seconds, never more often than `every`."""
    stream = io.StringIO()
    with ProgressLine("cases new", every=0.1, quiet=0.5, stream=stream) as progress:
        progress(0, 0, "analysing the application")
        time.sleep(0.3)
        assert stream.getvalue().count("\n") == 1  # printed once, then quiet
        time.sleep(0.6)
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 3
    assert all(line.startswith("cases new: analysing the application (") for line in lines)


def test_progress_is_a_log_record_with_json_logs() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = []
    stream = io.StringIO()
    try:
        set_up_logging("INFO", "json", stream=stream)
        progress = ProgressLine("cases new", every=0, stream=io.StringIO())
        progress(2, 5, "files read")
        progress.finish("XM-2026-0001 received")
        docs = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert docs[0]["message"].startswith("cases new: 2/5 files read (")
        assert (docs[0]["done"], docs[0]["total"], docs[0]["logger"]) == (2, 5, "mailbot.progress")
        assert docs[-1]["message"].startswith("cases new: done: XM-2026-0001 received in ")
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], root.level = saved
        set_up_logging("INFO", "text")


def _parked_messages(tmp_path: Path, db_url: str, n: int) -> tuple[Config, Path]:
    """n applications archived and recorded, then parked (as repeated failures leave them)."""
    cfg = make_config(tmp_path, db_url, "maildir:mail", workers=1)
    cfg.var_dir.mkdir()
    config = write_config(tmp_path / "mailbot.toml", cfg)
    cfg = Config.load(config)
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    import mailbox

    md = mailbox.Maildir(str(cfg.var_path("mail")), create=True)
    for i in range(n):
        md.add(make_mail(subject=f"厦门进度{i}有限公司+数字证书申办"))
    engine = make_engine(cfg.database_url)
    try:
        source = source_from_config(cfg)
        source.open()
        try:
            ingest(cfg, app_sessions(cfg, engine), source)
        finally:
            source.close()
        with engine.begin() as conn:
            conn.execute(update(Message).values(status=MESSAGE_PARKED, attempts=3))
    finally:
        engine.dispose()
    return cfg, config


def test_reprocess_reports_progress(tmp_path: Path, db_url: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = _parked_messages(tmp_path, db_url, 3)
    heard: list[tuple[int, int, str]] = []
    reset, unknown, report = reprocess(cfg, [], all_parked=True,
                                       progress=lambda d, t, w: heard.append((d, t, w)))
    assert len(reset) == 3 and unknown == [] and report.processed == 3
    assert heard[-1] == (3, 3, "messages")
    assert [d for d, _, _ in heard] == sorted(d for d, _, _ in heard)


def test_reprocess_and_hall_intake_print_progress_on_stderr_only(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, config = _parked_messages(tmp_path, db_url, 2)
    capsys.readouterr()
    assert main(["--config", str(config), "reprocess", "--all-parked"]) == 0
    out, err = capsys.readouterr()
    assert out == ("reprocess / 重新处理: 2 message(s); processed 2, failed 0, "
                   "parked again 0\n")  # unchanged: scripts read it
    assert err.splitlines()[-1].startswith("reprocess: done: 2/2 messages in ")

    hall = tmp_path / "hall"
    hall.mkdir()
    (hall / "申请表.docx").write_bytes(build_form(FILLED))
    assert main(["--config", str(config), "cases", "new", "--from-dir", str(hall),
                 "--by", "张三"]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"XM-\d{4}-\d{4}: taken in by 张三 \(message \d+\); now \S+ .*\n", out)
    ref = out.split(":")[0]
    assert re.match(rf"cases new: done: {ref} \S+ in \d", err.splitlines()[-1])


# -- contrib/ and docs/ ----------------------------------------------------------------------------
def _unit(path: Path) -> dict[str, list[str]]:
    """systemd's key=value lines, by key (a key may repeat)."""
    keys: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_the_systemd_unit_runs_the_daemon_as_documented() -> None:
    unit = _unit(REPO / "contrib" / "mailbot.service")
    assert unit["Type"] == ["simple"]
    assert unit["ExecStart"] == [
        "/opt/mailbot/.venv/bin/mailbot --config /etc/mailbot/mailbot.toml run"]
    assert unit["Restart"] == ["on-failure"] and unit["RestartSec"]
    assert unit["EnvironmentFile"] == ["/etc/mailbot/mailbot.env"]
    assert unit["User"] == ["mailbot"] and unit["WorkingDirectory"] == ["/var/lib/mailbot"]
    assert unit["KillSignal"] == ["SIGTERM"] and unit["TimeoutStopSec"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert "/var/lib/mailbot" in " ".join(unit["ReadWritePaths"])
    build_parser().parse_args(shlex.split(unit["ExecStart"][0])[1:])


def test_the_crl_timer_publishes_with_a_real_command() -> None:
    unit = _unit(REPO / "contrib" / "mailbot-crl.service")
    mailbot, rsync = unit["ExecStart"]
    args = build_parser().parse_args(shlex.split(mailbot)[1:])
    assert (args.command, args.ca_command) == ("ca", "crl")
    assert "/var/lib/mailbot/ca/ca.crl" in rsync  # [ca] crl_path under var_dir, by default
    assert unit["Type"] == ["oneshot"] and unit["User"] == ["mailbot"]
    assert "OnCalendar" in _unit(REPO / "contrib" / "mailbot-crl.timer")


def test_mailbot_admin_is_a_valid_shell_script() -> None:
    script = REPO / "contrib" / "mailbot-admin"
    assert script.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0


def test_the_environment_file_names_every_password_variable() -> None:
    text = (REPO / "contrib" / "mailbot.env.example").read_text(encoding="utf-8")
    names = {line.split("=", 1)[0].lstrip("# ") for line in text.splitlines() if "=" in line}
    cfg = Config()
    wanted = {cfg.mailbox.password_env, cfg.smtp.password_env, cfg.database.password_env,
              cfg.ca.key_passphrase_env, cfg.ca.sdf_password_env}
    assert wanted <= names
    assert "0600" in text


def _documented_commands(text: str) -> list[str]:
    """`mailbot …` in code blocks (one per line) and in inline code."""
    found: list[str] = []
    in_block = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            command = line.split(" # ")[0].strip()
            if re.match(r"^(sudo )?(\S*/)?mailbot(-admin)? ", command):
                found.append(command)
        else:
            found += [m for m in re.findall(r"`((?:sudo )?(?:\S*/)?mailbot(?:-admin)? [^`]+)`", line)
                      if "…" not in m and "|" not in m]
    return found


def test_every_command_in_the_operations_guide_exists() -> None:
    text = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    commands = _documented_commands(text)
    assert len(commands) > 30
    parser = build_parser()
    for command in commands:
        words = shlex.split(command, comments=True)
        while words and not words[0].endswith(("mailbot", "mailbot-admin")):
            words.pop(0)  # sudo
        if words[0].endswith("mailbot-admin"):  # contrib/mailbot-admin: the production --config
            words[:1] = ["mailbot", "--config", "/etc/mailbot/mailbot.toml"]
        args = parser.parse_args(words[1:])  # a mistake raises UsageError naming it
        assert getattr(args, "func", None) is not None, command
