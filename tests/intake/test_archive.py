"""The content-addressed archive: where files go, idempotence, no torn files, checks on read."""

from __future__ import annotations

import hashlib
import os

import pytest

from mailbot.intake import archive

RAW = b"From: a@example.cn\r\nSubject: test\r\n\r\nbody\r\n"


def test_path_is_content_addressed(tmp_path) -> None:
    sha, path = archive.store(tmp_path, RAW)
    assert sha == hashlib.sha256(RAW).hexdigest()
    assert path == tmp_path / sha[:2] / f"{sha}.eml"
    assert path.read_bytes() == RAW
    assert archive.relative_path(sha) == f"{sha[:2]}/{sha}.eml"


def test_store_is_idempotent_and_leaves_no_temp_files(tmp_path) -> None:
    _, first = archive.store(tmp_path, RAW)
    mtime = first.stat().st_mtime_ns
    _, second = archive.store(tmp_path, RAW)
    assert first == second and first.stat().st_mtime_ns == mtime
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    def broken_replace(src, dst):  # the rename never happens, as in a crash before it
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        archive.store(tmp_path, RAW)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_batch_mode_then_sync(tmp_path) -> None:
    paths = [archive.store(tmp_path, RAW + bytes([i]), durable=False)[1] for i in range(3)]
    archive.sync_paths(paths)
    assert all(p.exists() for p in paths)


def test_load_checks_presence_and_hash(tmp_path) -> None:
    sha, path = archive.store(tmp_path, RAW)
    assert archive.load(tmp_path, sha) == RAW
    path.write_bytes(RAW + b"tampered")
    with pytest.raises(archive.ArchiveError, match="corrupt"):
        archive.load(tmp_path, sha)
    path.unlink()
    with pytest.raises(archive.ArchiveError, match="missing"):
        archive.load(tmp_path, sha)


def test_large_message_round_trip(tmp_path) -> None:
    big = os.urandom(3 * 1024 * 1024)
    sha, _ = archive.store(tmp_path, big)
    assert archive.load(tmp_path, sha) == big


def test_archives_of_the_earlier_two_level_layout_are_read(tmp_path) -> None:
    sha = archive.sha256_hex(RAW)
    old = tmp_path / sha[:2] / sha[2:4] / f"{sha}.eml"
    old.parent.mkdir(parents=True)
    old.write_bytes(RAW)
    assert archive.load(tmp_path, sha) == RAW
    old.write_bytes(RAW + b"x")
    with pytest.raises(archive.ArchiveError, match="corrupt"):
        archive.load(tmp_path, sha)
