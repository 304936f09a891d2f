"""Logs: `--log-format json` (one object per line), text by default, and never a secret or key
material on stderr, whichever format: passwords in URLs, the password variables' values and
PEM private keys are taken out by the CLI's filter. End to end through `mailbot run --once`
against Dovecot and an SMTP server that asks for a password."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from mailbot.cli import main
from mailbot.cli.logs import (
    JsonFormatter,
    RedactingFilter,
    Redactor,
    secret_variables,
    set_up_logging,
    url_password,
)
from tests.support.intake import make_mail
from tests.support.smtp import SmtpServer

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)

URL_SECRET = "url-Secret/4@x"  # '/' and '@' in a password: written percent-encoded in the URL
ENV_SECRET = "env-Secret-7731"
PASSPHRASE = "ca-Passphrase-0042"
PEM = ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqBHM9VAYItBG0wawIBAQQgSECRETKEY\n"
       "-----END PRIVATE KEY-----")


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mailbot.test", logging.WARNING, __file__, 1, msg, args or None,
                               None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


# -- the pieces ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("imap://xmport:pa55word@imap.189.cn:993/INBOX", "imap://xmport:***@imap.189.cn:993/INBOX"),
    ("smtps://xmport%40189.cn:p%40ss@smtp.189.cn:465 down",
     "smtps://xmport%40189.cn:***@smtp.189.cn:465 down"),
    ("url='postgresql+psycopg://mb:s3cr@t@db:5432/mb'", "url='postgresql+psycopg://mb:***@db:5432/mb'"),
    ("imaps://xmport%40189.cn@imap.189.cn:993/INBOX", "imaps://xmport%40189.cn@imap.189.cn:993/INBOX"),
    ("http://xmport.example.cn/crl/ca.crl", "http://xmport.example.cn/crl/ca.crl"),
])
def test_passwords_in_urls_are_masked(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_pem_private_keys_are_masked_also_when_cut_short() -> None:
    redact = Redactor()
    text = redact(f"key was {PEM} and then\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB")
    assert "SECRETKEY" not in text and "MHcCAQEEIB" not in text
    assert text.startswith("key was -----BEGIN PRIVATE KEY----- *** -----END PRIVATE KEY----- and")
    certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert redact(certificate) == certificate  # public material stays readable


def test_the_secret_variables_are_found_by_name() -> None:
    env = {"MAILBOT_IMAP_PASSWORD": "imap-secret", "MAILBOT_CA_KEY_PASSPHRASE": "pass-phrase",
           "MAILBOT_LOG_LEVEL": "DEBUG", "OTHER_PASSWORD": "not-ours", "MY_SECRET": "named",
           "MAILBOT_SMTP_PASSWORD": "abc"}  # too short to be masked without blanking words
    assert sorted(secret_variables(env, names=["MY_SECRET"])) == ["imap-secret", "named",
                                                                  "pass-phrase"]
    assert url_password("imap://u:p%40ss@h:1/INBOX") == "p@ss"
    assert url_password("imaps://xmport%40189.cn@imap.189.cn:993/INBOX") is None
    assert url_password("maildir:mail") is None
    assert url_password("postgresql+psycopg://mb:{password}@db/mb") is None  # the placeholder


def test_the_filter_cleans_message_args_extras_and_traceback() -> None:
    f = RedactingFilter(Redactor([ENV_SECRET]))
    try:
        raise RuntimeError(f"login failed with {ENV_SECRET}")
    except RuntimeError:
        record = _record("connect %s as %s", "imap://u:pw12@h/INBOX", ENV_SECRET,
                         url=f"smtp://u:{ENV_SECRET}@h",
                         servers={"imap": ["imap://u:pw12@h/INBOX"], "port": 993})
        record.exc_info = sys.exc_info()
    assert f.filter(record)
    doc = json.loads(JsonFormatter().format(record))
    text = json.dumps(doc)
    assert ENV_SECRET not in text and "pw12" not in text
    assert doc["message"] == "connect imap://u:***@h/INBOX as ***"
    assert doc["url"] == "smtp://u:***@h"
    assert doc["servers"] == {"imap": ["imap://u:***@h/INBOX"], "port": 993}
    assert "RuntimeError: login failed with ***" in doc["exception"]


def test_json_lines_carry_time_level_logger_message_and_extras() -> None:
    record = _record("case %s approved", "XM-2026-0007", case="XM-2026-0007", attempts=2)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "mailbot.test"
    assert doc["message"] == "case XM-2026-0007 approved"
    assert doc["case"] == "XM-2026-0007" and doc["attempts"] == 2
    assert doc["time"].endswith("Z") and "T" in doc["time"]


def test_set_up_logging_leaves_a_foreign_handler_alone() -> None:
    """Like logging.basicConfig: a test runner's (or embedding program's) handlers win."""
    root = logging.getLogger()
    foreign = logging.NullHandler()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [foreign]
    try:
        set_up_logging("DEBUG", "json")
        assert root.handlers == [foreign]
        root.handlers[:] = []
        stream = io.StringIO()
        set_up_logging("INFO", "json", stream=stream)
        set_up_logging("INFO", "json", stream=stream)  # again: replaces its own handler
        assert len(root.handlers) == 1
        logging.getLogger("mailbot.x").info("hello %s", "imap://a:bcdef@h", extra={"case": "X"})
        doc = json.loads(stream.getvalue())
        assert doc["message"] == "hello imap://a:***@h" and doc["case"] == "X"
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], root.level = saved
        set_up_logging("INFO", "text")  # the module's format back to text for other tests


@pytest.mark.parametrize(("argv", "env"), [(["--log-format", "xml"], {}),
                                          ([], {"MAILBOT_LOG_FORMAT": "yaml"})])
def test_unknown_log_format_is_a_usage_error(argv: list[str], env: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([*argv, "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "log format" in err and "Traceback" not in err


# -- end to end --------------------------------------------------------------------------------
def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _json_lines(stderr: str) -> list[dict[str, object]]:
    docs = []
    for line in stderr.splitlines():
        doc = json.loads(line)  # every line, not just most of them
        assert isinstance(doc, dict) and {"time", "level", "logger", "message"} <= set(doc), line
        docs.append(doc)
    return docs


def _no_secrets(text: str) -> None:
    for secret in (URL_SECRET, quote(URL_SECRET, safe=""), ENV_SECRET, PASSPHRASE, "SECRETKEY"):
        assert secret not in text, secret


@pytest.fixture
def desk(tmp_path: Path, dovecot) -> Iterator[tuple[Path, dict[str, str], SmtpServer]]:
    """A configuration naming Dovecot with the password in the URL and an SMTP server whose
    password comes from the environment; the soft test CA's key encrypted with a passphrase."""
    user = dovecot.add_user(password=URL_SECRET)
    smtp = SmtpServer(users={"mailbot": ENV_SECRET}, auth_require_tls=False).start()
    config = tmp_path / "mailbot.toml"
    config.write_text(textwrap.dedent(f"""\
        [paths]
        var_dir = "var"
        [mailbox]
        url = "{user.url}"
        [smtp]
        url = "smtp://mailbot@127.0.0.1:{smtp.port}"
        [intake]
        workers = 1
        """), encoding="utf-8")
    assert quote(URL_SECRET, safe="") in user.url
    env = _environment(tmp_path, MAILBOT_SMTP_PASSWORD=ENV_SECRET,
                       MAILBOT_CA_KEY_PASSPHRASE=PASSPHRASE)
    user.append(make_mail(subject="厦门日志测试有限公司+数字证书申办"))
    try:
        yield config, env, smtp
    finally:
        smtp.stop()
        user.close()


@pytest.mark.timeout(240)
def test_run_once_json_logs_hold_no_secret(desk, tmp_path: Path) -> None:
    config, env, smtp = desk
    argv = [sys.executable, "-m", "mailbot.cli", "--config", str(config), "--log-level", "DEBUG",
            "--log-format", "json", "run", "--once"]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = _json_lines(proc.stderr)
    assert docs, "DEBUG logs something"
    _no_secrets(proc.stderr + proc.stdout)
    assert smtp.wait_for(1)  # it ran for real: the answer went out through the password-only server


SHIM = '''\
import logging, os, sys
import mailbot.app.daemon as daemon
from mailbot.cli import main

original = daemon.Daemon.run_once


def run_once(self, *args, **kwargs):
    """The run, after a log call that carries every kind of secret (as a careless one might)."""
    log = logging.getLogger("mailbot.app.daemon")
    try:
        raise ConnectionError("refused: " + os.environ["MAILBOT_SMTP_PASSWORD"])
    except ConnectionError:
        log.warning("mailbox %s smtp password %s passphrase %s key %s", self.cfg.mailbox.url,
                    os.environ["MAILBOT_SMTP_PASSWORD"], os.environ["MAILBOT_CA_KEY_PASSPHRASE"],
                    sys.argv[-1], exc_info=True, extra={"case": "XM-2026-0001",
                                                        "url": self.cfg.mailbox.url})
    print("a plain notice on stderr, " + os.environ["MAILBOT_SMTP_PASSWORD"], file=sys.stderr)
    return original(self, *args, **kwargs)


daemon.Daemon.run_once = run_once
sys.exit(main(sys.argv[1:-1]))
'''


@pytest.mark.timeout(240)
def test_a_log_call_carrying_secrets_is_redacted_end_to_end(desk, tmp_path: Path) -> None:
    """The same run with a log call (message, args, extra, traceback) and a plain stderr line
    carrying the secrets: what reaches stderr is JSON, redacted, with the extras kept."""
    config, env, _smtp = desk
    shim = tmp_path / "shim.py"
    shim.write_text(SHIM, encoding="utf-8")
    argv = [sys.executable, str(shim), "--config", str(config), "--log-format", "json",
            "run", "--once", PEM]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = _json_lines(proc.stderr)
    _no_secrets(proc.stderr)
    [warning] = [d for d in docs if str(d["message"]).startswith("mailbox ")]
    assert warning["level"] == "WARNING" and warning["case"] == "XM-2026-0001"
    assert ":***@127.0.0.1" in str(warning["url"]) and ":***@127.0.0.1" in str(warning["message"])
    assert "smtp password *** passphrase *** key -----BEGIN PRIVATE KEY----- ***" in \
        str(warning["message"])
    assert "ConnectionError: refused: ***" in str(warning["exception"])
    [notice] = [d for d in docs if str(d["message"]).startswith("a plain notice")]
    assert notice["message"] == "a plain notice on stderr, ***"
    assert notice["logger"] == "mailbot.cli"


def test_text_logs_stay_the_default_and_are_redacted_too(tmp_path: Path) -> None:
    """Without --log-format: the text lines as before, the error line plain, no secret."""
    config = tmp_path / "mailbot.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/none/{{password}}.db"\n'
                      '[smtp]\nurl = "smtp://u:' + quote(URL_SECRET, safe="") + '@127.0.0.1:1"\n',
                      encoding="utf-8")
    env = _environment(tmp_path, MAILBOT_DATABASE_PASSWORD=ENV_SECRET)
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "--config", str(config),
                           "status"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("mailbot: no database yet") and proc.stderr.count("\n") == 1
    _no_secrets(proc.stderr)
    json_run = subprocess.run([sys.executable, "-m", "mailbot.cli", "--config", str(config),
                               "--log-format", "json", "status"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    assert json_run.returncode == 1
    [error] = _json_lines(json_run.stderr)
    assert error["level"] == "ERROR" and str(error["message"]).startswith("mailbot: no database")
    _no_secrets(json_run.stderr)
