"""Self-tests of the harness (no FUSE needed): waiting, tree comparison,
log screening, mount detection, daemon start/stop with fake binaries."""

import os
import subprocess

import pytest

import spoolfs_harness as h


def test_wait_until_returns_the_value_and_reports_state_on_timeout():
    n = iter(range(100))
    assert h.wait_until(lambda: next(n) >= 3 and "ok", 5, "counter") == "ok"
    with pytest.raises(h.WaitTimeout) as e:
        h.wait_until(lambda: 1 / 0, 0.1, "the impossible",
                     state=lambda: "STATE-DESCRIPTION")
    msg = str(e.value)
    assert "the impossible" in msg and "ZeroDivisionError" in msg
    assert "STATE-DESCRIPTION" in msg


def test_assert_same_files_catches_every_difference(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    h.write_file(a / "x/1", b"one", mtime=1000)
    h.write_file(a / "2", b"two", mtime=1000)
    h.write_file(b / "x/1", b"one", mtime=1000)
    h.write_file(b / "2", b"two", mtime=1000)
    h.assert_same_files(a, b, mtime=True)
    h.write_file(b / "x/.spoolfs-1.part", b"o")
    with pytest.raises(AssertionError, match="temp files left"):
        h.assert_same_files(a, b)
    os.unlink(b / "x/.spoolfs-1.part")
    h.write_file(b / "2", b"twO", mtime=1000)
    with pytest.raises(AssertionError, match="differ"):
        h.assert_same_files(a, b)
    h.write_file(b / "2", b"two", mtime=1001)
    h.assert_same_files(a, b)
    with pytest.raises(AssertionError, match="mtime"):
        h.assert_same_files(a, b, mtime=True)
    h.write_file(b / "3", b"")
    with pytest.raises(AssertionError, match="unexpected"):
        h.assert_same_files(a, b)
    os.unlink(a / "2")
    with pytest.raises(AssertionError, match="missing|unexpected"):
        h.assert_same_files(b, a)


def test_log_screening(tmp_path):
    env = h.SpoolfsEnv(tmp_path)
    log = tmp_path / "daemon-1.log"
    log.write_text(
        "spoolfs: local: uploaded 'a b/c.txt' (3 bytes)\n"
        "spoolfs: warning: local: upload of 'x' failed: '/d' does not exist\n"
        "spoolfs: error: local: giving up on 'x'\n"
        "Ignoring invalid max threads value 4294967295 > max (100000).\n")
    env.daemons.append(h.Daemon(["true"], tmp_path, log))
    assert env.uploaded_lines() == [("local", "a b/c.txt")]
    assert len(env.unexpected_log_lines()) == 2
    env.allow_log("does not exist", "giving up")
    assert env.unexpected_log_lines() == []
    with open(log, "a") as f:
        f.write("==1==ERROR: AddressSanitizer: heap-use-after-free\n"
                "fs.c:10:3: runtime error: signed integer overflow\n")
    env.allow_log(".*")
    assert len(env.unexpected_log_lines()) == 2   # never allowlisted


def test_config_text(tmp_path):
    env = h.SpoolfsEnv(tmp_path)
    d = env.add_dest("local", retries=1)
    env.add_dest("far", url="sftp://u@127.0.0.1:2222/x", connections=1)
    text = env.config_text()
    assert f"[dest local]\nurl = file://{d}\nretries = 1\n" in text
    assert "[dest far]\nurl = sftp://u@127.0.0.1:2222/x" in text
    assert text.startswith(f"[spool]\ndir = {env.spool}\nsettle = 0\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_mount_detection_with_odd_path(tmp_path):
    p = tmp_path / "with space\tand tab"
    p.mkdir()
    assert not h.is_mounted(p)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(p)], check=True)
    try:
        assert h.mount_entry(p)[0] == "tmpfs"
        assert not h.is_fuse_mounted(p)
    finally:
        subprocess.run(["umount", str(p)], check=True)
    assert not h.is_mounted(p)


def _fake(tmp_path, body):
    f = tmp_path / "fake-spoolfs"
    f.write_text("#!/bin/sh\n" + body + "\n")
    f.chmod(0o755)
    return str(f)


def test_daemon_that_exits_is_reported_with_its_log(tmp_path):
    fake = _fake(tmp_path, 'echo "x.conf:3: unknown key" >&2; exit 1')
    d = h.Daemon([fake], tmp_path, tmp_path / "d.log")
    with pytest.raises(AssertionError, match=r"status 1.*\n.*x.conf:3: unknown key"):
        d.start(timeout=5)


def test_daemon_that_never_mounts_times_out_and_is_stopped(tmp_path):
    fake = _fake(tmp_path, "exec sleep 600")
    d = h.Daemon([fake], tmp_path, tmp_path / "d.log")
    with pytest.raises(h.WaitTimeout, match="to mount"):
        d.start(timeout=0.3)
    assert not d.alive() and d.killed


def test_big_file_generator(tmp_path):
    p = tmp_path / "f"
    digest = h.make_big_file(p, (3 << 20) + 5)
    assert p.stat().st_size == (3 << 20) + 5 and h.sha256(p) == digest
    data = p.read_bytes()
    assert data[: 1 << 20] != data[1 << 20: 2 << 20]
    assert h.pseudo_random(10, 1) != h.pseudo_random(10, 2)
    assert len(h.pseudo_random(3 << 20, 1)) == 3 << 20
