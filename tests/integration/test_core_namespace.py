"""The mount itself: root, local-disk behaviour inside a destination,
xattrs, .pending, statfs, config errors, the embedded default, daemon mode."""

import errno
import os
import re
import stat
import subprocess

import pytest

from spoolfs_harness import (XATTRS, fusermount_u, is_fuse_mounted, is_mounted,
                             mount_entry, pseudo_random, run, spoolfs_bin,
                             wait_until)


def test_root_lists_destinations_and_is_read_only(sfs):
    sfs.add_dest("alpha")
    sfs.add_dest("beta")
    sfs.mount()
    entries = list(os.scandir(sfs.mnt))
    assert sorted(e.name for e in entries if e.is_dir()) == ["alpha", "beta"]
    assert {e.name for e in entries if not e.is_dir()} <= {".status", ".status.json"}

    for what, op in [("mkdir", lambda: os.mkdir(sfs.mnt / "new")),
                     ("create", lambda: open(sfs.mnt / "new.txt", "wb"))]:
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EACCES, f"{what} in the root: {e.value!r}"
    r = run(["cp", "/etc/hostname", sfs.mnt / "x"], check=False)
    assert r.returncode != 0
    with pytest.raises(OSError):
        os.rmdir(sfs.mnt / "alpha")
    with pytest.raises(OSError):
        os.rename(sfs.mnt / "alpha", sfs.mnt / "gamma")
    assert sorted(os.listdir(sfs.mnt / "alpha")) in ([], [".failed", ".pending"])


def test_symlinks_and_hard_links_are_refused(mounted):
    d = mounted.m("local")
    (d / "f").write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.symlink("f", d / "l")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.link(d / "f", d / "g")
    assert e.value.errno == errno.EPERM
    mounted.wait_uploaded(d / "f")
    assert sorted(os.listdir(mounted.dest_dir())) == ["f"]


def test_names_longer_than_255_bytes_are_refused_up_front(mounted):
    """A name that fits no directory entry (ext4's limit, and every
    destination's) gets ENAMETOOLONG from create, mkdir and rename, as a
    local disk says, and leaves nothing behind: before, create made the
    file and then answered ENOENT, and it ended in .failed."""
    d = mounted.m("local")
    long = "\u00e9" * 127 + "x"                 # 255 bytes in UTF-8
    assert len(long.encode()) == 255
    (d / long).write_bytes(b"fits")
    os.mkdir(d / ("d" * 255))
    (d / "src").write_bytes(b"renamed")
    os.rename(d / "src", d / ("r" * 255))
    for n in (256, 1000):
        name = "a" * n
        for what, op in [
                ("create", lambda: open(d / name, "wb")),
                ("mkdir", lambda: os.mkdir(d / name)),
                ("rename", lambda: os.rename(d / long, d / name)),
                ("stat", lambda: os.stat(d / name))]:
            with pytest.raises(OSError) as e:
                op()
            assert e.value.errno == errno.ENAMETOOLONG, (what, n, e.value)
    mounted.wait_uploaded(d / long)
    mounted.wait_uploaded(d / ("r" * 255))
    dest = mounted.dest_dir()
    assert (dest / long).read_bytes() == b"fits"
    assert (dest / ("r" * 255)).read_bytes() == b"renamed"
    assert sorted(x for x in os.listdir(d) if not x.startswith(".")) == \
        sorted([long, "d" * 255, "r" * 255])
    assert os.listdir(d / ".failed") == []
    mounted.wait_spool_empty()


@pytest.mark.allow_log(r"file name too long")
def test_a_path_too_long_for_the_server_fails_saying_why(sfs):
    """Eighteen directories of 245-byte names: each name fits, but the path
    on the server is over PATH_MAX.  The upload fails at once (no retries
    can help), the file is kept in .failed/, and its error, cut in the
    middle of the long path, still ends with the reason."""
    sfs.add_dest("local")
    sfs.mount()
    names = [f"d{i:03d}" + "x" * 241 for i in range(18)]

    def walk(top, create):
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        for n in names:
            if create:
                os.mkdir(n, dir_fd=fd)
            nfd = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd

    fd = walk(sfs.m("local"), create=True)
    f = os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(f, b"deep")
    os.close(f)
    os.close(fd)
    wait_until(lambda: "file name too long" in sfs.log(), 20,
               "the upload to fail", state=lambda: sfs.log_tail())
    fd = walk(sfs.m("local", ".failed"), create=False)
    try:
        f = os.open("f.txt", os.O_RDONLY, dir_fd=fd)
        assert os.read(f, 100) == b"deep"
        err = os.getxattr(f, "user.spoolfs.error").decode()
        attempts = os.getxattr(f, "user.spoolfs.attempts").decode()
        os.close(f)
    finally:
        os.close(fd)
    assert attempts == "1"
    assert err.startswith("local: upload of 'd000x"), err
    assert "..." in err and err.endswith(": file name too long"), err
    line = [x for x in sfs.log().splitlines() if "too long" in x][0]
    assert "file name too long; kept in local/.failed/d000x" in line, line
    assert line.endswith("/f.txt"), line


def test_behaves_like_a_local_disk(sfs):
    # settle keeps every upload back until the sequence below is done, so
    # the destination must end with the final state only.
    sfs.set_spool(settle="3s")
    dest = sfs.add_dest("local")
    sfs.mount()
    d = sfs.m("local")
    os.makedirs(d / "dir/sub/deeper")
    p = d / "dir/f.bin"
    with open(p, "wb") as f:
        f.write(b"hello world")
        f.flush()
        os.fsync(f.fileno())
    assert p.read_bytes() == b"hello world"
    with open(p, "r+b") as f:
        f.seek(6)
        f.write(b"WORLD")
        f.seek(0)
        assert f.read() == b"hello WORLD"
    os.truncate(p, 5)
    assert p.read_bytes() == b"hello"
    with open(p, "ab") as f:
        f.write(b"!!")
    os.truncate(p, 10)
    assert p.read_bytes() == b"hello!!\0\0\0"
    assert os.stat(p).st_size == 10

    os.chmod(p, 0o640)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    os.chown(p, 1234, 2345)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    os.utime(p, (1_600_000_000, 1_500_000_000))
    assert int(os.stat(p).st_mtime) == 1_500_000_000

    os.rename(p, d / "dir/sub/g.bin")
    assert not p.exists()
    assert int(os.stat(d / "dir/sub/g.bin").st_mtime) == 1_500_000_000
    (d / "dir/tmp").write_bytes(b"temporary")
    os.unlink(d / "dir/tmp")
    assert not (d / "dir/tmp").exists()
    os.rmdir(d / "dir/sub/deeper")
    assert sorted(os.listdir(d / "dir")) == ["sub"]
    assert sorted(os.listdir(d / "dir/sub")) == ["g.bin"]
    sv = os.statvfs(d)
    assert sv.f_bavail > 0 and sv.f_frsize > 0
    run(["df", "-B1", d])

    g = d / "dir/sub/g.bin"
    sfs.wait_uploaded(g)
    assert (dest / "dir/sub/g.bin").read_bytes() == b"hello!!\0\0\0"
    assert int(os.stat(dest / "dir/sub/g.bin").st_mtime) == 1_500_000_000
    remote = [str(q.relative_to(dest)) for q in dest.rglob("*") if q.is_file()]
    assert remote == ["dir/sub/g.bin"]
    # metadata survives the upload (served from the journal)
    st = os.stat(g)
    assert (st.st_size, int(st.st_mtime), stat.S_IMODE(st.st_mode)) == \
        (10, 1_500_000_000, 0o640)
    sfs.wait_spool_empty()
    assert g.read_bytes() == b"hello!!\0\0\0"   # fetched back


def test_xattrs_through_a_files_life(sfs):
    # the throttle allows a burst of one second's worth, and the file
    # backend reports progress per 1 MiB chunk: 3 MiB at 1M/s shows progress
    dest = sfs.add_dest("local", max_rate="1M", connections=1)
    sfs.mount()
    p = sfs.m("local", "x/file.bin")
    os.mkdir(p.parent)
    data = pseudo_random(3 << 20, 7)
    with open(p, "wb") as f:
        f.write(data[:1000])
        f.flush()
        assert sfs.xattr(p, "state") == "writing"
        f.write(data[1000:])
    assert sfs.xattr(p, "state") in ("queued", "uploading")
    sfs.wait_state(p, "uploading")
    wait_until(lambda: 0 < int(sfs.xattr(p, "progress")) < len(data), 10,
               "progress to be between 0 and the size during the upload",
               state=lambda: sfs.describe([p]))
    sfs.wait_uploaded(p)
    x = sfs.xattrs(p)
    assert x == {"state": "uploaded", "attempts": "1", "error": "",
                 "remote": "file://" + str(dest / "x/file.bin"),
                 "progress": str(len(data))}, x
    out = run(["getfattr", "-d", "-m", "user.spoolfs", p]).stdout
    for n in XATTRS:
        assert f"user.spoolfs.{n}" in out, out
    assert 'user.spoolfs.state="uploaded"' in out
    assert (dest / "x/file.bin").read_bytes() == data


def test_pending_mirror(sfs):
    dest = sfs.add_dest("local", max_rate="100K", connections=1)
    sfs.mount()
    a, b = sfs.m("local", "sub/a.bin"), sfs.m("local", "sub/b.bin")
    os.mkdir(a.parent)
    da, db = pseudo_random(300_000, 1), pseudo_random(20_000, 2)
    a.write_bytes(da)
    b.write_bytes(db)
    sfs.wait_state(a, "uploading")
    assert sfs.state(b) == "queued"
    assert sfs.pending() == ["sub/a.bin", "sub/b.bin"]
    assert sfs.m("local", ".pending/sub/b.bin").read_bytes() == db
    run(["ls", "-la", sfs.m("local", ".pending/sub")])
    for op in (lambda: open(sfs.m("local", ".pending/new"), "wb"),
               lambda: os.unlink(sfs.m("local", ".pending/sub/b.bin")),
               lambda: os.mkdir(sfs.m("local", ".pending/d"))):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
    sfs.wait_uploaded(a, b)
    wait_until(lambda: sfs.pending() == [], 10, ".pending to empty",
               state=lambda: str(sfs.pending()))
    assert (dest / "sub/a.bin").read_bytes() == da
    assert (dest / "sub/b.bin").read_bytes() == db
    assert sfs.failed() == []


def test_statfs_reports_spool_free_space(mounted):
    m, s = os.statvfs(mounted.m("local")), os.statvfs(mounted.spool)
    free_m, free_s = m.f_bavail * m.f_frsize, s.f_bavail * s.f_frsize
    assert abs(free_m - free_s) <= max(0.05 * free_s, 256 << 20), (free_m, free_s)


def test_statfs_reports_max_size(sfs):
    sfs.set_spool(max_size="10M")
    sfs.add_dest("local")
    sfs.mount()
    m = os.statvfs(sfs.m("local"))
    total, free = m.f_blocks * m.f_frsize, m.f_bavail * m.f_frsize
    assert total <= 10 << 20, total
    assert 9 << 20 <= free <= 10 << 20, free


def test_keep_uploaded_keeps_spool_content(sfs):
    dest = sfs.add_dest("local", keep_uploaded="yes")
    sfs.mount()
    p = sfs.m("local", "k.bin")
    data = pseudo_random(100_000, 3)
    p.write_bytes(data)
    sfs.wait_uploaded(p)
    assert (dest / "k.bin").read_bytes() == data
    assert len(sfs.data_files()) == 1
    assert p.read_bytes() == data


# ---------------------------------------------------------------- config

GOOD_SPOOL = "[spool]\ndir = {spool}\nsettle = 0\n"
GOOD_DEST = "\n[dest local]\nurl = file://{dest}\n"

# (id, config text, line(s) the error may point at).  Where inih only sees a
# section at its first key, either the header or that key's line will do.
BAD_CONFIGS = [
    ("unknown-key", GOOD_SPOOL + GOOD_DEST + "retires = 3\n", 7),
    ("unknown-spool-key", "[spool]\ndir = {spool}\nsize = 1G\n" + GOOD_DEST, 3),
    ("bad-size", "[spool]\ndir = {spool}\nmax_size = lots\n" + GOOD_DEST, 3),
    ("bad-fsync", "[spool]\ndir = {spool}\nfsync = sometimes\n" + GOOD_DEST, 3),
    ("bad-settle", "[spool]\ndir = {spool}\nsettle = soon\n" + GOOD_DEST, 3),
    ("bad-url-scheme", GOOD_SPOOL + "\n[dest local]\nurl = gopher://example/x\n", 6),
    ("bad-retries", GOOD_SPOOL + GOOD_DEST + "retries = many\n", 7),
    ("bad-backoff", GOOD_SPOOL + GOOD_DEST + "backoff = fast\n", 7),
    ("bad-bool", GOOD_SPOOL + GOOD_DEST + "delete_remote = perhaps\n", 7),
    ("unknown-fallback", GOOD_SPOOL + GOOD_DEST + "fallback = nowhere\n", (7, 5)),
    ("duplicate-dest", GOOD_SPOOL + GOOD_DEST + GOOD_DEST, (8, 9)),
    ("unknown-section", GOOD_SPOOL + GOOD_DEST + "\n[bogus]\nx = 1\n", (8, 9)),
    ("no-url", GOOD_SPOOL + "\n[dest local]\nretries = 2\n", (5, 6)),
    ("bad-dest-name", GOOD_SPOOL + "\n[dest .pending]\nurl = file://{dest}\n", (5, 6)),
]


def _run_expect_refusal(sfs, argv):
    """Run spoolfs and expect it to exit 1 without mounting."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        fusermount_u(sfs.mnt, lazy=True)
        pytest.fail(f"{argv} did not exit within 15s (it should refuse the config)")
    mounted_now = is_mounted(sfs.mnt)
    if mounted_now:
        fusermount_u(sfs.mnt, lazy=True)
    assert not mounted_now, "spoolfs mounted despite the bad config"
    assert p.returncode == 1, f"exit status {p.returncode}, stderr:\n{p.stderr}"
    return p.stderr


@pytest.mark.parametrize("text,line", [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_with_file_and_line(sfs, text, line):
    cfg = sfs.root / "bad.conf"
    cfg.write_text(text.format(spool=sfs.spool, dest=sfs.destroot / "local"))
    stderr = _run_expect_refusal(sfs, [spoolfs_bin(), "-f", cfg, sfs.mnt])
    lines = line if isinstance(line, tuple) else (line,)
    assert any(re.search(re.escape(f"{cfg}:{n}:") + r" \S", stderr)
               for n in lines), \
        f"expected '{cfg}:{'|'.join(map(str, lines))}: <message>' on stderr, got:\n{stderr}"


def test_password_in_world_readable_config_is_refused(sfs):
    cfg = sfs.root / "pw.conf"
    cfg.write_text(GOOD_SPOOL.format(spool=sfs.spool)
                   + "\n[dest nas]\nurl = ftp://127.0.0.1:1/x\nuser = u\n"
                   "password = secret\n")
    cfg.chmod(0o644)
    stderr = _run_expect_refusal(sfs, [spoolfs_bin(), "-f", cfg, sfs.mnt])
    assert str(cfg) in stderr and "0600" in stderr, stderr
    assert "secret" not in stderr


def test_missing_config_file_is_refused(sfs):
    cfg = sfs.root / "nonexistent.conf"
    stderr = _run_expect_refusal(sfs, [spoolfs_bin(), "-f", cfg, sfs.mnt])
    assert str(cfg) in stderr, stderr


# ---------------------------------------------------------------- modes

def test_embedded_default_config(sfs):
    home = sfs.root / "home"
    env = dict(os.environ, HOME=str(home),
               XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"),
               XDG_CACHE_HOME=str(home / ".cache"))
    home.mkdir()
    sfs.mount(config=False, env=env)
    assert "local" in os.listdir(sfs.mnt)
    p = sfs.m("local", "hello.txt")
    p.write_bytes(b"hello, default\n")
    sfs.wait_uploaded(p)
    landed = home / ".local/share/spoolfs/local/hello.txt"
    assert landed.read_bytes() == b"hello, default\n"
    assert (home / ".cache/spoolfs/journal.db").exists()


def test_daemonizes_without_f(sfs):
    dest = sfs.add_dest("local")
    cfg = sfs.write_config()
    log = sfs.root / "daemon-bg.log"
    with open(log, "wb") as out:
        # stdout/stderr to a file: a daemon that kept a pipe open would hang us
        r = subprocess.run([spoolfs_bin(), cfg, sfs.mnt], stdout=out,
                           stderr=subprocess.STDOUT, timeout=30)
    try:
        assert r.returncode == 0, log.read_text()
        wait_until(lambda: is_fuse_mounted(sfs.mnt), 10, "background mount")
        p = sfs.m("local", "bg.txt")
        p.write_bytes(b"from the background\n")
        sfs.wait_uploaded(p)
        assert (dest / "bg.txt").read_bytes() == b"from the background\n"
    finally:
        if is_mounted(sfs.mnt):
            u = fusermount_u(sfs.mnt)
            if u.returncode != 0:
                fusermount_u(sfs.mnt, lazy=True)
    assert not is_mounted(sfs.mnt)


def test_fuse_options_and_debug_flag(sfs):
    dest = sfs.add_dest("local")
    sfs.mount("-d", "-o", "fsname=spooltest,default_permissions")
    assert mount_entry(sfs.mnt)[1] == "spooltest"
    p = sfs.m("local", "dbg.txt")
    p.write_bytes(b"debug")
    sfs.wait_uploaded(p)
    assert (dest / "dbg.txt").read_bytes() == b"debug"


def test_fsync_never_still_uploads_everything(sfs):
    sfs.set_spool(fsync="never")
    dest = sfs.add_dest("local")
    sfs.mount()
    for i in range(20):
        sfs.m("local", f"n{i}.bin").write_bytes(pseudo_random(5000, i))
    sfs.wait_uploaded(*[sfs.m("local", f"n{i}.bin") for i in range(20)])
    for i in range(20):
        assert (dest / f"n{i}.bin").read_bytes() == pseudo_random(5000, i)
    sfs.wait_spool_empty()
