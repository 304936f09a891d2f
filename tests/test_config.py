"""Configuration: embedded defaults, overlays, and the shipped example stays loadable."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.config import Config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_live_under_var(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = Config.load(None)
    assert cfg.mailbox.url == "maildir:mail"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'var' / 'mailbot.sqlite3'}"
    assert cfg.archive_dir == tmp_path / "var" / "archive"
    assert cfg.intake.max_message_bytes == 64 * 1024 * 1024


def test_file_naming_only_urls_keeps_other_defaults(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[mailbox]\nurl = "imap://u:p@127.0.0.1:1143/INBOX"\n'
                 '[smtp]\nurl = "smtp://127.0.0.1:2525"\n', encoding="utf-8")
    cfg = Config.load(f)
    assert cfg.mailbox.url.startswith("imap://")
    assert cfg.intake.processed_folder == "已处理"
    assert cfg.var_dir == tmp_path / "var"


def test_unknown_key_is_refused(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text("[mailbox]\nurll = 'x'\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mailbox.urll"):
        Config.load(f)


def test_database_password_from_environment(tmp_path, monkeypatch) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[database]\nurl = "postgresql+psycopg://mb:{password}@db/mb"\n', encoding="utf-8")
    monkeypatch.setenv("MAILBOT_DATABASE_PASSWORD", "s3cret")
    assert Config.load(f).database_url == "postgresql+psycopg://mb:s3cret@db/mb"


def test_example_config_loads_and_equals_defaults() -> None:
    cfg = Config.load(REPO / "config.example.toml")
    assert cfg.intake == Config().intake and cfg.ca == Config().ca
    assert cfg.mailbox == Config().mailbox and cfg.smtp == Config().smtp


def test_shipped_rules_are_the_default(tmp_path, monkeypatch) -> None:
    from mailbot.config import DEFAULT_RULES_DIR, load_rule_settings, shipped_dir

    monkeypatch.chdir(tmp_path)  # found through the package, not the working directory
    assert Path(Config().rules_dir) == DEFAULT_RULES_DIR == shipped_dir("rules")
    assert (DEFAULT_RULES_DIR / "materials.toml").is_file()
    assert Path(Config().templates_dir) == shipped_dir("templates")
    assert set(load_rule_settings()) >= {"materials", "subject"}


@pytest.mark.parametrize(("text", "key"), [
    ('[ca]\nsigner = "HSM"\n', "[ca] signer"),
    ('[smtp]\nurl = "mail.example.cn:25"\n', "[smtp] url"),
    ('[smtp]\nurl = "imap://mail.example.cn"\n', "[smtp] url"),
])
def test_enumerated_values_are_checked_on_load(tmp_path, text: str, key: str) -> None:
    from mailbot.config import ConfigError

    f = tmp_path / "m.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Config.load(f)


def test_smtp_password_is_not_echoed(tmp_path) -> None:
    from mailbot.config import ConfigError

    f = tmp_path / "m.toml"
    f.write_text('[smtp]\nurl = "smtpx://me:hunter2@mail.example.cn:465"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        Config.load(f)
    assert "hunter2" not in str(exc.value) and "me:***@mail.example.cn" in str(exc.value)
