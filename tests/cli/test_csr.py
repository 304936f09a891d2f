"""`mailbot csr check FILE [--json]`: exit codes, JSON contract, bilingual summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.cli import main
from mailbot.pki import sm2
from tests.support import pki_csr as ps
from tests.support.pki_csr import openssl_csr


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)


REPO = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def _run_err(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_valid_request_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.csr"
    path.write_bytes(openssl_csr("sm2"))
    rc, out = _run(capsys, "csr", "check", str(path), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert list(doc) == ["valid", "algorithm", "subject", "codes", "findings"]
    assert doc["valid"] is True and doc["algorithm"] == "SM2" and doc["codes"] == []
    assert "CN=alice.example.cn" in doc["subject"]


def test_valid_request_human(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.der"
    path.write_bytes(ps.pem_to_der(openssl_csr("sm2")))
    rc, out = _run(capsys, "csr", "check", str(path))
    assert rc == 0
    assert "VALID" in out and "有效" in out and "SM2" in out


@pytest.mark.parametrize(("kind", "code"), [("sm2-noid", "csr_wrong_sm2_id"),
                                            ("rsa2048", "csr_not_sm2")])
def test_invalid_request(kind: str, code: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csr"
    path.write_bytes(openssl_csr(kind))
    rc, out = _run(capsys, "csr", "check", str(path), "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["valid"] is False and doc["codes"] == [code]
    assert doc["findings"][0]["severity"] == "reject"
    rc, out = _run(capsys, "csr", "check", str(path))
    assert rc == 1 and "INVALID" in out and "无效" in out and code in out


def test_quirky_request_is_valid_with_warnings(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    d = sm2.generate_private_key()
    pub = sm2.public_key_of(d)
    path = tmp_path / "cfca.csr"
    path.write_bytes(ps.pem(ps.request(d, ps.info(pub, attributes=ps.cfca_attributes(pub)),
                                       sigalg=ps.SM3_WITH_SM2_NULL)))
    rc, out = _run(capsys, "csr", "check", str(path), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["valid"] is True and set(doc["codes"]) == {"csr_encoding_quirk"}
    assert all(f["severity"] == "warn" for f in doc["findings"])


def test_unreadable_file_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a request")
    rc, out = _run(capsys, "csr", "check", str(path), "--json")
    assert rc == 1 and json.loads(out)["codes"] == ["csr_unreadable"]


def test_usage_errors_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run_err(capsys, "csr", "check", str(tmp_path / "missing.csr"))
    assert rc == 2 and "missing.csr" in err
    rc, _ = _run(capsys, "csr", "check", str(tmp_path))  # a directory
    assert rc == 2
    rc, _ = _run(capsys, "csr")
    assert rc == 2
    rc, err = _run_err(capsys, "csr", "check")  # argparse mistakes: one line, exit 2
    assert rc == 2 and "FILE" in err and len(err.splitlines()) == 1
    rc, err = _run_err(capsys, "csr", "check", "x.csr", "--bogus")
    assert rc == 2 and "--bogus" in err and len(err.splitlines()) == 1


@pytest.mark.timeout(60)
def test_real_command_line(tmp_path: Path) -> None:
    path = tmp_path / "good.csr"
    path.write_bytes(openssl_csr("sm2"))
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "csr", "check", str(path),
                           "--json"], capture_output=True, text=True, timeout=60, check=False,
                          cwd=tmp_path, env={**_env(), "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["valid"] is True
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "csr", "check", "-", "--json"],
                          input=openssl_csr("sm2-noid").decode(), capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path,
                          env={**_env(), "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["codes"] == ["csr_wrong_sm2_id"]


def _env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if k != "MAILBOT_CONFIG"}
