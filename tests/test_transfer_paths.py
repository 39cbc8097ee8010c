"""Paths: what a sender sends, and that a receiver never writes outside its directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qotp.transfer.paths import (
    ManifestError,
    ReceiveDirectory,
    UnsafePathError,
    build_manifest,
    check_relative_path,
)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./b",
        "a//b",
        "a/",
        "..",
        "a\\..\\b",
        "a\nb",
        "a\x00b",
        "x" * 256,
        "a/.b.qotp-partial",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePathError):
        check_relative_path(path)


def test_plain_relative_paths_pass() -> None:
    assert check_relative_path("a/b c/ü.txt") == ("a", "b c", "ü.txt")
    assert check_relative_path(".hidden/..x") == (".hidden", "..x")


def test_manifest_keeps_the_tree_and_skips_links(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "sub" / "deeper" / "file").write_bytes(b"abc")
    (tree / "top").write_bytes(b"")
    os.symlink("/", tree / "root-link")
    os.symlink(tree / "top", tree / "file-link")
    single = tmp_path / "single.bin"
    single.write_bytes(b"12345")
    manifest = build_manifest([tree, single])
    assert [entry.relative for entry in manifest.files] == [
        "tree/top",
        "tree/sub/deeper/file",
        "single.bin",
    ]
    assert manifest.total_bytes == 8
    assert sorted(manifest.skipped) == ["tree/file-link", "tree/root-link"]


def test_manifest_refuses_missing_and_colliding_inputs(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot send"):
        build_manifest([tmp_path / "missing"])
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "same").write_bytes(b"1")
    (tmp_path / "two" / "same").write_bytes(b"2")
    with pytest.raises(ManifestError, match="both"):
        build_manifest([tmp_path / "one" / "same", tmp_path / "two" / "same"])


def test_receive_directory_creates_parents_inside(tmp_path: Path) -> None:
    directory = ReceiveDirectory(tmp_path / "in")
    placement = directory.place("a/b/c.txt")
    assert placement.final == directory.root / "a" / "b" / "c.txt"
    assert placement.partial.name == ".c.txt.qotp-partial"
    assert (directory.root / "a" / "b").is_dir()


def test_receive_directory_must_take_files(tmp_path: Path) -> None:
    """A directory that exists but takes no files fails at once, and the probe leaves nothing."""
    ReceiveDirectory(tmp_path / "in")
    assert list((tmp_path / "in").iterdir()) == []
    with pytest.raises(PermissionError):
        ReceiveDirectory(Path("/sys"))  # no files there, not even root's


def test_links_leading_outside_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    directory = ReceiveDirectory(tmp_path / "in")
    os.symlink(outside, directory.root / "escape")
    os.symlink("../..", directory.root / "up")
    (directory.root / "inner").mkdir()
    os.symlink("inner", directory.root / "alias")
    with pytest.raises(UnsafePathError, match="outside"):
        directory.place("escape/file")
    with pytest.raises(UnsafePathError, match="outside"):
        directory.place("up/file")
    assert directory.place("alias/file").directory == directory.root / "inner"
    assert list(outside.iterdir()) == []


def test_files_in_the_way_are_refused(tmp_path: Path) -> None:
    directory = ReceiveDirectory(tmp_path / "in")
    (directory.root / "plain").write_bytes(b"")
    with pytest.raises(UnsafePathError, match="not a directory"):
        directory.place("plain/file")


def test_long_names_get_a_short_partial_name(tmp_path: Path) -> None:
    directory = ReceiveDirectory(tmp_path / "in")
    placement = directory.place("n" * 250)
    assert len(placement.partial_name) <= 255 and placement.partial_name.endswith(".qotp-partial")
