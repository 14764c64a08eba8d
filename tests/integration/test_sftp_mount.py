"""sftp:// destinations through the real mount, against a real OpenSSH sshd
on 127.0.0.1 (sshd_server.py), with real tools: cp, rsync, mv, getfattr.

Covers issue 3's "through the mount" list: odd names, a 32 MiB file and
2000 small files byte-exact with no temp files left; key, password and
ssh-agent logins; an unknown host key refused with nothing written; a wrong
key failing at once; a server SIGKILLed mid-upload and restarted resumes the
partial temp; a server down past the retries -> .failed/, then `mv` out of
.failed/ once it is back; passwords never in the log, journal, xattrs or
`spoolfs check`; `spoolfs check` against a live and a dead server; a second
`rsync -a` transfers nothing.

test_server_dies_mid_upload_partial_temp_is_removed goes beyond the issue's
list: SEMANTICS says a partial upload is removed when a file fails for good.

They skip when sshd is missing unless SPOOLFS_REQUIRE_SFTP=1 (CI); password
logins need root (PAM and the `spoolfs-test` unix user).

Run: SPOOLFS_BIN=build/spoolfs /usr/bin/python3 -m pytest \
         tests/integration/test_sftp_mount.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from spoolfs_harness import (TEMP_RE, all_xattrs, assert_same_files,
                             child_env, emptied_directories_go,
                             make_big_file, make_flat_tree,
                             need_root, pseudo_random, rename_onto_held_names,
                             run, scaled, sha256, shuffle_names, spoolfs_bin,
                             stray_names, unavailable, wait_until, write_file)
from sshd_server import SSHD, TEST_USER, SshServer

PASSWORD = "Spoolfs-m0unt-s3cret-pw"

ODD_NAMES = [
    "with space.txt", " leading space", "trailing space ",
    "ünïcödé-日本語.txt", "emoji-😀.jpg", "hash#tag", "100%.txt", "%41%2F",
    "quote'single", 'quote"double', "-leading-dash", "--", "back\\slash",
    "star*?[x]", "semi;colon&$dollar`tick`", "tab\tname", "~tilde",
    ".hidden", "..dots", "a" * 255, "é" * 127 + "x", "ends.with.part",
    "CAPS.TXT", "caps.txt",
]


# ------------------------------------------------------------ fixtures

@pytest.fixture(autouse=True)
def _need_sshd():
    if not os.access(SSHD, os.X_OK):
        unavailable("no /usr/sbin/sshd (apt-get install openssh-server)",
                    "SPOOLFS_REQUIRE_SFTP")





@pytest.fixture
def servers():
    """A factory of started SshServers, closed after the test.  Request it
    BEFORE sfs so the servers outlive the daemon's unmount."""
    made: list[SshServer] = []

    def make(**kw) -> SshServer:
        srv = SshServer(**kw)
        made.append(srv)
        return srv.start()
    yield make
    for srv in made:
        srv.close()


@pytest.fixture
def sshd(servers):
    """Key login as the current user (root)."""
    return servers()


def add_box(sfs, srv: SshServer, name="box", **keys):
    """[dest NAME] on SRV: its client key and known_hosts unless given
    (a key set to None is dropped)."""
    opts = {"identity": srv.client_key, "known_hosts": srv.known_hosts,
            "stall_timeout": "10s", "connect_timeout": "10s"}
    opts.update(keys)
    sfs.add_dest(name, url=srv.url(), **opts)


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return path




def mount(sfs, **kw):
    return sfs.mount(env=child_env(**kw))


def server_entries(srv: SshServer) -> list[str]:
    return sorted(str(p.relative_to(srv.root)) for p in srv.root.rglob("*"))


def describe(sfs, srv: SshServer, paths=()) -> str:
    names = server_entries(srv)
    sshd_log = srv.log_text().splitlines()[-15:]
    return (sfs.describe(paths)
            + f"\nserver root {srv.root}: {len(names)} entries {names[:15]}"
            + "\nsshd log (last lines):\n  " + "\n  ".join(sshd_log))


def wait_failed(sfs, srv, rel, dest="box", timeout=30.0) -> Path:
    """Wait until DEST/.failed/REL exists; returns its path."""
    p = sfs.m(dest, ".failed/" + rel)
    wait_until(lambda: rel in sfs.failed(dest), timeout,
               f"{rel} to land in {dest}/.failed/",
               state=lambda: describe(sfs, srv, [sfs.m(dest, rel), p]))
    return p


def check(cfg: Path, *dests: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(spoolfs_bin()), "check", str(cfg), *dests],
                          capture_output=True, text=True,
                          env=child_env(**env), timeout=scaled(60))


def make_odd_tree(root: Path) -> Path:
    for i, n in enumerate(ODD_NAMES):
        write_file(root / n, pseudo_random(1000 + 37 * i, i),
                   mtime=1_400_000_000 + i)
    deep = root / "dir with space" / "ß#%'\"" / "-x" / ("d" * 255)
    for i, n in enumerate(ODD_NAMES[:8] + ["b" * 255]):
        write_file(deep / n, pseudo_random(500 + i, 100 + i))
    write_file(root / "empty-0-bytes", b"")
    write_file(deep / "empty", b"")
    return root





def upload_one(sfs, srv, rel="a/hello.txt", data=b"hello over sftp\n"):
    """Write one file through the mount, wait for it on the server."""
    p = sfs.m("box", rel)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    sfs.wait_uploaded(p, timeout=30)
    assert (srv.root / rel).read_bytes() == data
    remote = sfs.xattr(p, "remote")
    assert remote == f"sftp://{srv.user}@127.0.0.1:{srv.port}{srv.root}/{rel}"
    return p


# ------------------------------------------------------------ 1. copy a tree

def test_cp_r_odd_names_big_and_many_files(sshd, sfs):
    add_box(sfs, sshd, connections=2)
    tree = sfs.src / "tree"
    make_odd_tree(tree / "odd")
    make_flat_tree(tree / "many", 2000, 1500, dirs=20, seed=7)
    digest = make_big_file(tree / "big.bin", 32 << 20)
    mount(sfs)

    t0 = time.monotonic()
    run(["cp", "-r", tree, sfs.m("box") / ""])
    sfs.wait_uploaded(files_under=sfs.m("box", "tree"), timeout=150)
    print(f"cp -r + upload of {2000 + len(ODD_NAMES) + 11} files and 32 MiB "
          f"over sftp: {time.monotonic() - t0:.1f}s")

    # byte-exact on the server, nothing else there (no .spoolfs-* temps)
    assert_same_files(sfs.src, sshd.root)
    assert stray_names(sshd.root) == []
    assert sha256(sshd.root / "tree/big.bin") == digest
    assert (sshd.root / "tree/odd/empty-0-bytes").stat().st_size == 0
    assert not [p for p in sshd.root.rglob(".spoolfs-*")]
    sfs.wait_spool_empty()
    assert sfs.pending("box") == [] and sfs.failed("box") == []

    # read back through the mount: the spool copy is gone, so this is `get`
    assert_same_files(tree / "odd", sfs.m("box", "tree/odd"))
    assert sha256(sfs.m("box", "tree/big.bin")) == digest
    assert sorted(os.listdir(sfs.m("box", "tree/odd"))) == \
        sorted(os.listdir(tree / "odd"))


# ------------------------------------------------------------ 2. auth

def test_key_auth(sshd, sfs):
    add_box(sfs, sshd)
    mount(sfs)
    p = upload_one(sfs, sshd)
    assert sfs.xattr(p, "attempts") == "1"
    assert "publickey" in sshd.log_text()


def test_password_auth(servers, sfs):
    need_root()
    srv = servers(user=TEST_USER, password=PASSWORD, pubkey=False)
    pw = secret_file(sfs.root / "box.pass", PASSWORD)
    add_box(sfs, srv, identity=None, password_file=pw)
    mount(sfs)
    upload_one(sfs, srv)
    assert (srv.root / "a/hello.txt").stat().st_uid != 0  # as spoolfs-test
    assert re.search(r"Accepted password for " + TEST_USER, srv.log_text())


def test_debug_log_shows_each_step_never_the_password(servers, sfs):
    """-d logs the session (server, kex, login method) and every SFTP
    operation of an upload, and still never the password."""
    need_root()
    srv = servers(user=TEST_USER, password=PASSWORD, pubkey=False)
    add_box(sfs, srv, identity=None,
            password_file=secret_file(sfs.root / "box.pass", PASSWORD))
    sfs.mount("-d", env=child_env())
    upload_one(sfs, srv)
    log = sfs.log()
    assert re.search(r"box: sftp: 127\.0\.0\.1:\d+ is 'SSH-2\.0-OpenSSH",
                     log), log
    assert f"box: sftp: logged in as '{TEST_USER}'" in log, log
    assert "tried: password)" in log, log
    assert re.search(r"box: sftp: put 'a/" + TEMP_RE + r"' bytes 0\.\.16",
                     log), log
    assert re.search(r"box: sftp: rename 'a/" + TEMP_RE + r"' to "
                     r"'a/hello\.txt'", log), log
    assert PASSWORD not in log


def test_ssh_agent_auth(sshd, sfs, tmp_path):
    if not (shutil.which("ssh-agent") and shutil.which("ssh-add")):
        unavailable("no ssh-agent / ssh-add (apt-get install openssh-client)",
                    "SPOOLFS_REQUIRE_SFTP")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)],
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, 5, f"ssh-agent socket {sock}")
        run(["ssh-add", sshd.client_key],
            env=dict(os.environ, SSH_AUTH_SOCK=str(sock)))
        # no identity: only the agent can log in
        add_box(sfs, sshd, identity=None, ssh_agent="yes")
        mount(sfs, SSH_AUTH_SOCK=str(sock))
        upload_one(sfs, sshd)
        assert "publickey" in sshd.log_text()
        sfs.unmount()       # before the agent goes away
    finally:
        agent.kill()
        agent.wait()


# ------------------------------------------------------------ 3-4. refused

def test_unknown_host_key_is_refused_and_nothing_written(sshd, sfs):
    empty = sfs.root / "empty_known_hosts"
    empty.write_text("")
    add_box(sfs, sshd, known_hosts=empty)
    sfs.allow_log(r"box: upload of 'sub/dir/x\.jpg' .* failed: host key")
    mount(sfs)
    data = pseudo_random(100_000, 3)
    write_file(sfs.m("box", "sub/dir/x.jpg"), data)
    f = wait_failed(sfs, sshd, "sub/dir/x.jpg")
    err = sfs.xattr(f, "error")
    assert f"[127.0.0.1]:{sshd.port}" in err, err
    assert sshd.host_key_sha256 in err, err
    assert re.search(r"SHA256:[A-Za-z0-9+/]{43}", err), err
    assert str(empty) in err, err
    assert err.startswith("box: upload of 'sub/dir/x.jpg'"), err
    assert sfs.xattr(f, "state") == "failed"
    assert sfs.xattr(f, "attempts") == "1"
    assert f.read_bytes() == data               # full content kept
    # nothing on the server: no file, no temp, no directory
    assert server_entries(sshd) == []
    assert "Accepted" not in sshd.log_text()
    time.sleep(0.5)                            # and no late retry
    assert server_entries(sshd) == []
    assert len(re.findall(r"upload of 'sub/dir/x\.jpg'", sfs.log())) == 1


def test_wrong_key_fails_at_once(sshd, sfs):
    stranger = sshd.add_client_key("ed25519", authorize=False)
    add_box(sfs, sshd, identity=stranger, retries=5)
    sfs.allow_log(r"box: upload of 'k\.bin' .* failed: authentication failed")
    mount(sfs)
    write_file(sfs.m("box", "k.bin"), b"key test")
    f = wait_failed(sfs, sshd, "k.bin")
    err = sfs.xattr(f, "error")
    assert "authentication failed" in err, err
    assert f"'{sshd.user}'" in err and f"127.0.0.1:{sshd.port}" in err, err
    assert sfs.xattr(f, "attempts") == "1"    # permanent: no retries
    assert sfs.xattr(f, "state") == "failed"
    time.sleep(0.5)
    assert len(re.findall(r"upload of 'k\.bin'", sfs.log())) == 1, sfs.log()
    assert server_entries(sshd) == []


def test_connection_closed_during_login_is_retried(servers, sfs):
    """The server's process for our connection dies while it checks our
    key (its AuthorizedKeysCommand kills it, the first time only).
    libssh2 1.10 reports that as a failed login; spoolfs must see the
    closed connection, retry, and upload, not fail the file for good as a
    refused key (before, k.bin went to .failed/ with 'authentication
    failed ... (tried: publickey)')."""
    if os.geteuid() != 0:
        unavailable("AuthorizedKeysCommandUser root needs root",
                    "SPOOLFS_REQUIRE_SFTP")
    mark = sfs.root / "login-killed-once"
    srv = servers()
    srv.reconfigure(extra_config="\n".join([
        "AuthorizedKeysFile none",
        f'AuthorizedKeysCommand /bin/sh -c "if [ -e {mark} ]; then '
        f'cat {srv.authorized_keys}; exit 0; fi; touch {mark}; '
        f'kill -9 $PPID"',
        "AuthorizedKeysCommandUser root"]))
    add_box(sfs, srv, retries=3, backoff="100ms..200ms")
    sfs.allow_log(r"closed the connection during authentication")
    mount(sfs)
    p = sfs.m("box", "k.bin")
    write_file(p, b"login interrupted once")
    sfs.wait_uploaded(p, timeout=30)
    assert mark.exists(), "premise: the server's login process was killed"
    assert (srv.root / "k.bin").read_bytes() == b"login interrupted once"
    assert sfs.xattr(p, "attempts") == "2"
    assert "closed the connection during authentication" in sfs.log()
    assert sfs.failed("box") == []


# ------------------------------------------------------------ 5. resume

def test_server_killed_mid_upload_resumes(sshd, sfs):
    size = 100 * 1000 * 1000
    add_box(sfs, sshd, max_rate="20M", connections=1, retries=10,
            backoff="300ms..1s", stall_timeout="5s")
    src = sfs.src / "big.bin"
    digest = make_big_file(src, size, seed=5)
    mount(sfs)
    p = sfs.m("box", "big.bin")
    run(["cp", src, p])
    t0 = time.monotonic()

    # kill the server once a good part is on it
    part = []

    def some_sent():
        got = [x for x in sshd.root.glob(".spoolfs-*.part")]
        part[:] = got
        return got and got[0].stat().st_size > 25_000_000
    wait_until(some_sent, 30, "25 MB of big.bin on the server",
               state=lambda: describe(sfs, sshd, [p]), interval=0.05)
    sshd.kill()
    on_server = part[0].stat().st_size
    assert on_server < size, "the upload finished before the kill"
    time.sleep(0.3)
    sshd.start()         # same port, same keys

    sfs.wait_uploaded(p, timeout=60)
    took = time.monotonic() - t0
    assert sha256(sshd.root / "big.bin") == digest
    assert server_entries(sshd) == ["big.bin"]       # no temp left
    m = re.search(r"^spoolfs: box: resuming 'big\.bin' at byte (\d+) of "
                  rf"{size}$", sfs.log(), re.M)
    assert m, "no resume line\n" + sfs.log_tail()
    resumed_at = int(m.group(1))
    # resumed from (about) what the killed server had written, not from 0
    assert 0 < resumed_at <= on_server, (resumed_at, on_server)
    assert resumed_at > 20_000_000, (resumed_at, on_server)
    # the daemon saw the kill: the stream that sent the part written while
    # cp ran handed the file back, or an attempt failed
    assert re.search(r"^spoolfs: box: (streaming 'big\.bin' stopped|"
                     r"upload of 'big\.bin' .* failed): ", sfs.log(), re.M), \
        sfs.log_tail()
    # a stream handed back is no attempt (SEMANTICS.md): when the kill hit
    # it and the server was back by the first try, one attempt did it all
    attempts = int(sfs.xattr(p, "attempts"))
    assert attempts >= 1
    assert re.search(rf"box: uploaded 'big\.bin' to sftp://\S+ \({size} "
                     rf"bytes, attempt {attempts}\)", sfs.log())
    assert sfs.xattr(p, "progress") == str(size)
    print(f"killed at {on_server} bytes, resumed at {resumed_at}, "
          f"{attempts} attempts, {took:.1f}s")
    sfs.wait_spool_empty()


# ------------------------------------------------------------ 6. down

def test_server_down_past_retries_then_mv_out_of_failed(sshd, sfs):
    add_box(sfs, sshd, retries=2, backoff="50ms..200ms")
    sfs.allow_log(r"box: upload of 'down/x\.bin' .* failed: cannot connect"
                  r" .*\(out of retries\)")
    mount(sfs)
    sshd.kill()
    data = pseudo_random(300_000, 11)
    write_file(sfs.m("box", "down/x.bin"), data)
    f = wait_failed(sfs, sshd, "down/x.bin")
    err = sfs.xattr(f, "error")
    assert err.startswith("box: upload of 'down/x.bin' to sftp://"), err
    assert f"cannot connect to 127.0.0.1:{sshd.port}" in err, err
    assert "refused" in err.lower(), err
    assert sfs.xattr(f, "attempts") == "3"     # 1 + retries
    assert f.read_bytes() == data

    sshd.start()
    dst = sfs.m("box", "down/x.bin")
    run(["mv", f, dst])
    assert "down/x.bin" not in sfs.failed("box")
    sfs.wait_uploaded(dst, timeout=30)
    assert sfs.xattr(dst, "attempts") == "1"   # attempts start again
    assert (sshd.root / "down/x.bin").read_bytes() == data
    assert server_entries(sshd) == ["down", "down/x.bin"]
    assert sfs.failed("box") == [] and sfs.pending("box") == []


def test_server_dies_mid_upload_partial_temp_is_removed(sshd, sfs):
    """The server dies in the middle of an upload and stays down past the
    retries: the file goes to .failed/, and the partial temp it left on the
    server is removed once the server can be reached again (SEMANTICS:
    "a partial upload on the server is removed")."""
    size = 30_000_000
    add_box(sfs, sshd, max_rate="20M", connections=1, retries=2,
            backoff="50ms..200ms", stall_timeout="5s")
    sfs.allow_log(r"box: upload of 'p/big\.bin' .* failed: .*"
                  r"\(out of retries\)",
                  # while the server is down the temp cannot go yet
                  r"box: cannot remove 'p/" + TEMP_RE + r"' from the"
                  r" server: cannot connect")
    src = sfs.src / "big.bin"
    digest = make_big_file(src, size, seed=8)
    mount(sfs)
    p = sfs.m("box", "p/big.bin")
    p.parent.mkdir()
    run(["cp", src, p])

    def temps():
        return sorted(str(t.relative_to(sshd.root))
                      for t in sshd.root.rglob(".spoolfs-*"))
    wait_until(lambda: temps() and (sshd.root / temps()[0]).stat().st_size
               > 5_000_000, 30, "5 MB of p/big.bin on the server",
               state=lambda: describe(sfs, sshd, [p]), interval=0.05)
    sshd.kill()
    partial = temps()
    f = wait_failed(sfs, sshd, "p/big.bin")
    assert "127.0.0.1" in sfs.xattr(f, "error")
    assert sha256(f) == digest                 # full content kept

    sshd.start()
    wait_until(lambda: temps() == [], 15,
               f"the partial temp {partial} to be removed from the server "
               "once it is back",
               state=lambda: describe(sfs, sshd, [f]), interval=0.1)

    run(["mv", f, p])
    sfs.wait_uploaded(p, timeout=30)
    assert sha256(sshd.root / "p/big.bin") == digest
    assert server_entries(sshd) == ["p", "p/big.bin"]


# ------------------------------------------------------------ 7. passwords




def test_passwords_never_appear(servers, sfs):
    need_root()
    srv = servers(user=TEST_USER, password=PASSWORD, pubkey=False)
    wrong = "Wr0ng-" + PASSWORD[::-1]
    add_box(sfs, srv, identity=None,
            password_file=secret_file(sfs.root / "box.pass", PASSWORD))
    add_box(sfs, srv, name="bad", identity=None,
            password_file=secret_file(sfs.root / "bad.pass", wrong))
    sfs.allow_log(r"bad: upload of 'w\.txt' .* failed: authentication failed")
    mount(sfs)
    upload_one(sfs, srv, "ok/good.txt", b"fine")
    write_file(sfs.m("bad", "w.txt"), b"refused")
    wait_failed(sfs, srv, "w.txt", dest="bad")
    ok = check(sfs.cfg_path, "box")
    bad = check(sfs.cfg_path, "bad")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bad.returncode != 0 and "authentication failed" in bad.stdout
    xattrs = all_xattrs(sfs.mnt)
    assert "user.spoolfs.remote=sftp://" in xattrs
    assert "authentication failed" in xattrs
    sfs.unmount()     # the journal and log are complete

    journal = b"".join(p.read_bytes() for p in sorted(sfs.spool.rglob("*"))
                       if p.is_file())
    assert (sfs.spool / "journal.db").is_file() and journal
    places = {
        "daemon log": sfs.log(),
        "journal (SPOOL/*, as bytes)": journal.decode("latin-1"),
        "xattrs": xattrs,
        "spoolfs check": ok.stdout + ok.stderr + bad.stdout + bad.stderr,
        "config": sfs.cfg_path.read_text(),
    }
    for where, text in places.items():
        for secret in (PASSWORD, wrong):
            assert secret not in text, f"a password appears in the {where}"
    for secret in (PASSWORD, wrong):
        assert secret.encode() not in journal
        assert secret.encode("utf-16-le") not in journal


# ------------------------------------------------------------ 8. check

def test_check_live_and_dead_server(sshd, sfs):
    add_box(sfs, sshd)
    cfg = sfs.write_config()
    r = check(cfg, "box")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^box: ok \(sftp://", r.stdout, re.M), r.stdout
    assert server_entries(sshd) == []        # the probe cleaned up

    sshd.kill()
    r = check(cfg, "box")
    assert r.returncode != 0
    assert re.search(r"^box: FAILED at connect: cannot connect to "
                     rf"127\.0\.0\.1:{sshd.port}", r.stdout, re.M), \
        r.stdout + r.stderr


# ------------------------------------------------------------ 9. rsync

def _transferred(stats: str) -> int:
    m = re.search(r"Number of regular files transferred: ([\d,]+)", stats)
    assert m, stats
    return int(m.group(1).replace(",", ""))


def test_rsync_a_twice_transfers_nothing_the_second_time(sshd, sfs):
    if not shutil.which("rsync"):
        unavailable("no rsync (apt-get install rsync)", "SPOOLFS_REQUIRE_SFTP")
    add_box(sfs, sshd)
    src = sfs.src / "photos"
    make_flat_tree(src, 200, 3000, dirs=4, seed=9)
    make_odd_tree(src / "odd")
    nfiles = sum(1 for p in src.rglob("*") if p.is_file())
    mount(sfs)
    target = sfs.m("box", "photos")
    first = run(["rsync", "-a", "--stats", f"{src}/", f"{target}/"]).stdout
    assert _transferred(first) == nfiles
    sfs.wait_uploaded(files_under=target, timeout=60)
    # rsync's ".name.XXXXXX" temps must not land; mtimes are set remotely
    assert_same_files(sfs.src, sshd.root, mtime=True)
    sfs.wait_spool_empty()
    uploads = len(sfs.uploaded_lines("box"))
    second = run(["rsync", "-a", "--stats", f"{src}/", f"{target}/"]).stdout
    assert _transferred(second) == 0, second
    time.sleep(0.3)
    assert len(sfs.uploaded_lines("box")) == uploads, "uploaded again"
    assert_same_files(sfs.src, sshd.root, mtime=True)
    assert sfs.data_files() == []


# ------------------------------------------- renames onto held names

def test_renames_onto_names_another_copy_still_holds(sshd, sfs):
    """Keep the old version beside the new one, and swap two files, while
    the one session is busy: every rename on the server waits for the copy
    that holds its new name to move (or moves aside first), so nothing is
    overwritten."""
    add_box(sfs, sshd, connections=1, max_rate="200K")
    sfs.mount()
    rename_onto_held_names(sfs, "box", sshd.root)


def test_renamed_or_removed_directories_leave_no_empty_one_behind(sshd, sfs):
    """As for file://: SSH_FXP_RMDIR of each directory the files left."""
    add_box(sfs, sshd, delete_remote="yes")
    mount(sfs)
    emptied_directories_go(sfs, "box", sshd.root)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_renames_rewrites_and_removals_end_as_in_the_mount(sshd, sfs,
                                                                  seed):
    """As for file://, over three SFTP sessions."""
    add_box(sfs, sshd, connections=3, max_rate="2M")
    sfs.set_spool(settle="100ms")
    sfs.mount()
    shuffle_names(sfs, "box", sshd.root, seed)


# ------------------------------------------------- big files, two sessions

def test_big_file_goes_over_two_sessions(sshd, sfs):
    """libssh2 is CPU-bound on one core: a put of >= 64 MiB sends its upper
    half over a second session.  The file arrives whole, nothing else."""
    size = 150 * 1000 * 1000 + 4321
    add_box(sfs, sshd)
    src = sfs.src / "big.raw"
    digest = make_big_file(src, size, seed=21)
    sfs.mount("-d", env=child_env())
    p = sfs.m("box", "big.raw")
    run(["cp", src, p])
    sfs.wait_uploaded(p, timeout=120)
    assert sha256(sshd.root / "big.raw") == digest
    assert server_entries(sshd) == ["big.raw"]
    assert re.search(r"sftp: '\.spoolfs-\S+\.part' bytes \d+\.\.\d+ here, "
                     r"\d+\.\.\d+ over a second session", sfs.log()), \
        sfs.log_tail()
    assert sfs.xattr(p, "progress") == str(size)


def test_rekeys_mid_upload_keep_every_byte(servers, sfs):
    """sshd renews the session keys after every MiB (RekeyLimit), so
    libssh2 sets up new AES-CTR contexts again and again in both sessions
    of a split put; the keystream spoolfs makes for it 16 KiB at a time
    (backends/ssh_ctr.c) must start over with each.  The file arrives
    whole."""
    srv = servers(extra_config="RekeyLimit 1M\nLogLevel DEBUG1")
    add_box(sfs, srv)
    src = sfs.src / "big.raw"
    digest = make_big_file(src, 70 * 1000 * 1000 + 5, seed=23)
    # libssh2 1.10 itself leaks 51 bytes per key exchange (inside
    # libssh2_sftp_write; as much with SPOOLFS_SSH_CTR=0): not looked for
    # in the sanitizer build's daemon here, which makes some 70 of them
    asan = os.environ.get("ASAN_OPTIONS", "")
    sfs.mount("-d", env=child_env(ASAN_OPTIONS=asan + ":detect_leaks=0"))
    p = sfs.m("box", "big.raw")
    run(["cp", src, p])
    sfs.wait_uploaded(p, timeout=120)
    assert sha256(srv.root / "big.raw") == digest
    assert server_entries(srv) == ["big.raw"]
    assert "libssh2's AES-CTR runs in 16 KiB strides" in sfs.log(), \
        sfs.log_tail()
    rekeys = srv.log_text().count("SSH2_MSG_NEWKEYS received")
    assert rekeys > 20, srv.log_text()[-2000:]


def test_server_killed_during_a_split_put_resumes_without_a_gap(sshd, sfs):
    """A temp written by two sessions at once has a gap until both are done,
    so its size is no resume point: the retry resumes from what the server
    held without a gap (the progress), and the file arrives whole."""
    size = 400 * 1000 * 1000
    add_box(sfs, sshd, connections=1, retries=10, backoff="300ms..1s",
            stall_timeout="5s")
    src = sfs.src / "big.bin"
    digest = make_big_file(src, size, seed=22)
    sfs.mount("-d", env=child_env())
    p = sfs.m("box", "big.bin")
    run(["cp", src, p])
    seen = []

    def split_and_sent():
        if "over a second session" not in sfs.log():
            return False
        seen[:] = [int(sfs.xattr(p, "progress") or 0)]
        return seen[0] > 40_000_000
    wait_until(split_and_sent, 60, "a split put with 40 MB sent without a gap",
               state=lambda: describe(sfs, sshd, [p]), interval=0.01)
    sshd.kill()
    assert sfs.state(p) != "uploaded", "the upload finished before the kill"
    time.sleep(0.3)
    sshd.start()

    sfs.wait_uploaded(p, timeout=120)
    assert sha256(sshd.root / "big.bin") == digest
    assert server_entries(sshd) == ["big.bin"]
    m = re.search(r"^spoolfs: box: resuming 'big\.bin' at byte (\d+) of "
                  rf"{size}$", sfs.log(), re.M)
    assert m, "no resume line\n" + sfs.log_tail()
    resumed_at = int(m.group(1))
    assert seen[0] <= resumed_at < size, (seen[0], resumed_at)


def test_small_files_without_fsetstat_go_the_libssh2_way(servers, sfs,
                                                         tmp_path):
    """A server that refuses FSETSTAT (here sftp-server -P fsetstat): the
    side channel's small put finds out at the first file, says so once in
    the log, and this connection's small files go through libssh2, which
    sets the mtime by path.  Every file arrives byte for byte with its
    mtime; none goes to .failed/."""
    srv = servers(sftp_flags="-P fsetstat")
    add_box(sfs, srv)
    mount(sfs)
    when = 1_500_000_000
    src = tmp_path / "fsetstat-src"
    src.mkdir()
    files = {f"f{i}.txt": pseudo_random(100 + i * 700, i) for i in range(5)}
    for name, data in files.items():
        (src / name).write_bytes(data)
        os.utime(src / name, (when, when))
    subprocess.run(["cp", "-r", "--preserve=timestamps", str(src),
                    str(sfs.m("box", "d"))], check=True, timeout=scaled(60))
    sfs.wait_uploaded(*(sfs.m("box", f"d/{n}") for n in files))
    for name, data in files.items():
        up = srv.root / "d" / name
        assert up.read_bytes() == data, name
        assert int(up.stat().st_mtime) == when, name
    assert sfs.failed() == []
    assert "does not set times through a handle" in sfs.log(), sfs.log_tail()
