"""Session-scoped PKI fixtures (a soft CA, an OpenSSL-made CSR, the software SDF library).

Test modules load them with `pytest_plugins = ["tests.support.pki_issue_fixtures"]`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mailbot.config import Config
from mailbot.pki.ca import CaState, init_ca
from tests.support.pki_issue import openssl, write_config

SOFTSDF_C = Path(__file__).resolve().parent / "sdf_soft" / "softsdf.c"


@pytest.fixture(scope="session")
def pki_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return Config.load(write_config(tmp_path_factory.mktemp("pki_ca")))


@pytest.fixture(scope="session")
def ca_state(pki_cfg: Config) -> CaState:
    return init_ca(pki_cfg)


@pytest.fixture(scope="session")
def ca_pem(ca_state: CaState, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki_pem") / "ca.pem"
    path.write_text(ca_state.chain_pem())
    return path


@pytest.fixture(scope="session")
def user_csr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An applicant key and CSR made by OpenSSL with the standard SM2 ID."""
    d = tmp_path_factory.mktemp("pki_user")
    openssl("genpkey", "-algorithm", "SM2", "-out", "user.key", cwd=d)
    openssl("req", "-new", "-key", "user.key", "-sm3", "-sigopt", "distid:1234567812345678",
            "-subj", "/C=CN/O=Xiamen Test Trading/OU=IT/CN=alice", "-out", "user.csr", cwd=d)
    return d / "user.key", d / "user.csr"


@pytest.fixture(scope="session")
def softsdf_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The software SDF library, compiled from tests/sdf_soft/softsdf.c with gcc + libcrypto."""
    out = tmp_path_factory.mktemp("softsdf") / "libsoftsdf.so"
    res = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
                          "-Wno-deprecated-declarations", "-o", str(out), str(SOFTSDF_C),
                          "-lcrypto"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out
