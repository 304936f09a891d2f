"""Packaging: rules/, templates/ and migrations/ ship as package data, and a regular
(non-editable) install works from an unrelated directory, as a new user meets mailbot."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from mailbot.config import DEFAULT_RULES_DIR, Config, load_rule_settings, shipped_dir
from mailbot.db import MIGRATIONS_DIR
from tests.support.intake import make_mail

REPO = Path(__file__).resolve().parents[2]
DATA_PACKAGES = {"mailbot._rules": "rules", "mailbot._templates": "templates",
                 "mailbot._migrations": "migrations"}


def _setuptools_table() -> dict:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def test_every_package_is_listed_for_the_wheel() -> None:
    table = _setuptools_table()
    code = set(find_packages(where=str(REPO), include=["mailbot", "mailbot.*"]))
    assert set(table["packages"]) == code | set(DATA_PACKAGES), "update pyproject's packages"
    assert table["package-dir"] == DATA_PACKAGES


def test_data_folders_are_found_through_the_package() -> None:
    assert (shipped_dir("rules") / "materials.toml").is_file()
    assert (shipped_dir("templates")).is_dir()
    assert (MIGRATIONS_DIR / "env.py").is_file() and (MIGRATIONS_DIR / "versions").is_dir()
    assert Config().rules_dir == str(DEFAULT_RULES_DIR)
    assert "materials" in load_rule_settings()


def _venv_ready() -> str | None:
    if importlib.util.find_spec("wheel") is None:
        return "the wheel package is missing (pip install -e '.[test]')"
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 68:
        return "setuptools>=68 is missing (pip install -e '.[test]')"
    return None


def _sh(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(600)
@pytest.mark.skipif(_venv_ready() is not None, reason=str(_venv_ready()))
def test_regular_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """`pip install .` (a wheel, not editable) into a new venv, then used from an empty folder.

    The venv sees the system's site-packages for the dependencies (no download); mailbot
    itself is built offline from a clean copy of the checkout and installed as a wheel.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILBOT_", "PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    src = tmp_path / "src"  # a clean copy: no stale build/ or egg-info of the checkout
    for name in ("mailbot", "rules", "templates", "migrations"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    built = _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-q", "-w", str(dist), str(src)], tmp_path, env)
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("mailbot-*.whl"))

    venv = tmp_path / "venv"
    made = _sh([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    assert made.returncode == 0, made.stderr
    py, mailbot = venv / "bin" / "python", venv / "bin" / "mailbot"
    inst = _sh([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                "-q", str(wheel)], tmp_path, env)
    assert inst.returncode == 0, inst.stderr

    work = tmp_path / "elsewhere"  # unrelated and empty
    work.mkdir()
    where = _sh([str(py), "-c", "import mailbot, mailbot.config as c, mailbot.db as d;"
                 "print(mailbot.__file__); print(c.DEFAULT_RULES_DIR); print(d.MIGRATIONS_DIR)"],
                work, env)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():  # the installed copy, not the checkout
        assert line.startswith(str(venv)), where.stdout

    eml = tmp_path / "application.eml"
    eml.write_bytes(make_mail())
    inspected = _sh([str(mailbot), "inspect", str(eml), "--json"], work, env)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["kind"] == "new"
    assert list(work.iterdir()) == []

    for argv in (["cases", "list"], ["status"]):
        proc = _sh([str(mailbot), *argv], work, env)
        assert proc.returncode == 1, proc.stderr
        assert "no database yet" in proc.stderr and "mailbot init" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert list(work.iterdir()) == [], argv
    for argv, code in ((["cases", "list", "--state", "bogus"], 2),
                       (["--config", "missing.toml", "status"], 2),
                       (["--log-level", "LOUD", "status"], 2)):
        proc = _sh([str(mailbot), *argv], work, env)
        assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert list(work.iterdir()) == [], argv

    new = work / "var" / "mail" / "new"  # the embedded default Maildir
    new.mkdir(parents=True)
    for sub in ("cur", "tmp"):
        (new.parent / sub).mkdir()
    (new / "1.application.eml").write_bytes(make_mail())
    ran = _sh([str(mailbot), "run", "--once"], work, env)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert (work / "var" / "mailbot.sqlite3").is_file()
    assert list(new.iterdir()) == []  # moved to 已处理

    status = _sh([str(mailbot), "status", "--json"], work, env)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["messages"] == {"processed": 1}
    assert sum(doc["cases"].values()) == 1


def test_a_second_checkout_reads_its_own_data_folders(tmp_path: Path) -> None:
    """Code run from another checkout never takes this one's rules or migrations."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("mailbot", "rules", "templates", "migrations"):
        shutil.copytree(REPO / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    code = ("import mailbot.config as c, mailbot.db as d; "
            "print(c.DEFAULT_RULES_DIR); print(d.MIGRATIONS_DIR)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True,
                         env={**os.environ, "PYTHONPATH": str(copy)}).stdout.split()
    assert out == [str(copy / "rules"), str(copy / "migrations")]
