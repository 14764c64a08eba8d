"""ftp:// and ftps:// destinations through the real mount, against real
vsftpd and pure-ftpd servers on 127.0.0.1 (ftp_server.py), with real tools:
cp, mv, getfattr.

Covers issue 4's "through the mount" list, for each server and mode:

  vsftpd    plain FTP, explicit FTPS (AUTH TLS, require_ssl_reuse=YES),
            implicit FTPS (TLS from the first byte, on a free port)
  pure-ftpd plain FTP, explicit FTPS; not implicit (Debian builds it
            without --with-implicittls; see SERVERS)

  - `cp -r` of a tree with odd names, a 0-byte file, a 32 MiB file and
    2000 small files: byte for byte on the server, no temp left; names the
    server (or FTP itself) cannot store end in .failed/ with the reason;
  - a self-signed certificate without tls_ca -> .failed/ with a
    certificate error; with tls_ca it works;
  - tls_ca holding the wrong certificate -> .failed/; the right one put
    into that file while mounted, `mv` out of .failed/ -> uploaded;
  - a wrong password -> .failed/ with the server's 530 reply;
  - a name with CR or LF -> .failed/ with a clear error, a canary file on
    the server untouched and no byte of the name on the control connection
    (the daemon's -d log of every command it sent, and vsftpd's own log);
  - the server SIGKILLed in the middle of a 100 MB upload (max_rate) and
    restarted on the same port -> the upload resumes from the partial temp;
  - the server down past the retries -> .failed/; back up, `mv` out of
    .failed/ -> uploaded;
  - the reply to the rename that commits an upload lost (the link drops
    after the server did it) and the file renamed before the retry -> the
    copy moves to the new name, nothing is sent twice or left behind;
  - passwords never in the daemon's log, the journal, the xattrs.

Needs root (FTP local-user logins of the `spoolfs-ftp` unix user) and
vsftpd; the pure-ftpd cases need scripts/install-deps --test (which unpacks
it into /opt/pure-ftpd).  Missing servers skip, unless
SPOOLFS_REQUIRE_FTP=1 (.ci/run sets it): then they fail.

Run: SPOOLFS_BIN=build/spoolfs /usr/bin/python3 -m pytest \
         tests/integration/test_ftp_mount.py
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from ftp_server import (ControlProxy, FtpServer, have_vsftpd, make_cert,
                        pure_ftpd_path)
from spoolfs_harness import (all_xattrs, child_env, emptied_directories_go,
                             make_big_file, make_flat_tree, pseudo_random,
                             rename_onto_held_names, run, sha256,
                             stray_names, unavailable, wait_until,
                             write_file)


# (impl, mode) -> pytest id
SERVERS = [
    pytest.param(("vsftpd", "plain"), id="vsftpd-plain"),
    pytest.param(("vsftpd", "explicit"), id="vsftpd-explicit"),
    pytest.param(("vsftpd", "implicit"), id="vsftpd-implicit"),
    pytest.param(("pure-ftpd", "plain"), id="pure-plain"),
    pytest.param(("pure-ftpd", "explicit"), id="pure-explicit"),
    # No pure-ftpd implicit FTPS: implicit TLS is a compile-time option
    # (--with-implicittls) that Debian's pure-ftpd is built without, and it
    # would turn every connection on the port implicit.
]
TLS_SERVERS = [p for p in SERVERS if p.values[0][1] != "plain"]
# The copy of 2000 files over TLS (a TLS data connection each) takes ~10 s
# here but over a minute under ASan: `big` there (the sanitizer pass
# deselects it), so that pass copies the tree over plain FTP only.
COPY_SERVERS = [p if p.values[0][1] == "plain" else
                pytest.param(*p.values, id=p.id,
                             marks=[*p.marks, pytest.mark.big])
                for p in SERVERS]
VSFTPD = [p for p in SERVERS if p.values[0][0] == "vsftpd"]


def _missing(impl: str) -> str | None:
    if os.geteuid() != 0:
        return "FTP local-user logins need root"
    if impl == "vsftpd" and not have_vsftpd():
        return "no /usr/sbin/vsftpd (apt-get install vsftpd)"
    if impl == "pure-ftpd" and not pure_ftpd_path():
        return ("pure-ftpd is not unpacked (scripts/install-deps --test puts "
                "it in /opt/pure-ftpd)")
    return None


def _need(impl: str):
    reason = _missing(impl)
    if reason:
        unavailable(reason, "SPOOLFS_REQUIRE_FTP")


# ------------------------------------------------------------ fixtures

@pytest.fixture
def servers():
    """A factory of started FtpServers, closed after the test.  Request it
    (or ftpd) BEFORE sfs so the servers outlive the daemon's unmount."""
    made: list[FtpServer] = []

    def make(mode="plain", impl="vsftpd", **kw) -> FtpServer:
        _need(impl)
        srv = FtpServer(mode, impl=impl, **kw)
        made.append(srv)
        return srv.start()
    yield make
    for srv in made:
        srv.close()


@pytest.fixture
def ftpd(request, servers):
    impl, mode = request.param
    return servers(mode, impl)


def add_nas(sfs, srv: FtpServer, name="nas", password=None, tls_ca=True,
            **keys):
    """[dest NAME] on SRV with its user and a password_file (the right
    password unless given); tls_mode and tls_ca for FTPS (the server's
    certificate, or the file TLS_CA names)."""
    pw = sfs.root / f"{name}.pass"
    pw.write_text((srv.password if password is None else password) + "\n")
    os.chmod(pw, 0o600)
    opts = {"user": srv.user, "password_file": pw,
            "stall_timeout": "10s", "connect_timeout": "10s"}
    if srv.mode != "plain":
        opts["tls_mode"] = srv.mode
        if tls_ca:
            opts["tls_ca"] = srv.cert if tls_ca is True else tls_ca
    opts.update(keys)
    sfs.add_dest(name, url=srv.url(), **opts)




def mount(sfs, *args, **kw):
    return sfs.mount(*args, env=child_env(**kw))


def home(srv: FtpServer) -> Path:
    return Path(srv.home)


def server_entries(srv: FtpServer) -> list[str]:
    return sorted(str(p.relative_to(home(srv))) for p in home(srv).rglob("*"))


def describe(sfs, srv: FtpServer, paths=()) -> str:
    names = server_entries(srv)
    log = srv.protocol_log().splitlines()[-15:]
    return (sfs.describe(paths)
            + f"\nserver home {srv.home}: {len(names)} entries {names[:15]}"
            + f"\n{srv.impl} log (last lines):\n  " + "\n  ".join(log))


def wait_failed(sfs, srv, rel, dest="nas", timeout=30.0) -> Path:
    """Wait until DEST/.failed/REL exists; returns its path."""
    p = sfs.m(dest, ".failed/" + rel)
    wait_until(lambda: rel in sfs.failed(dest), timeout,
               f"{rel!r} to land in {dest}/.failed/",
               state=lambda: describe(sfs, srv, [sfs.m(dest, rel), p]))
    return p


def remote_prefix(srv: FtpServer) -> str:
    return f"{srv.scheme}://{srv.user}@127.0.0.1:{srv.port}/"


def upload_one(sfs, srv, rel="a/hello.txt", data=b"hello over ftp\n",
               dest="nas"):
    """Write one file through the mount, wait for it on the server."""
    p = sfs.m(dest, rel)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    sfs.wait_uploaded(p, timeout=30)
    assert (home(srv) / rel).read_bytes() == data
    assert sfs.xattr(p, "remote") == remote_prefix(srv) + rel
    return p


# ------------------------------------------------------------ 1. copy a tree

# The names of test_sftp_mount.py's odd tree, with what FTP does to them.
ODD_NAMES = [
    "with space.txt", " leading space", "ünïcödé-日本語.txt", "emoji-😀.jpg",
    "hash#tag", "100%.txt", "%41%2F", "quote'single", 'quote"double',
    "-leading-dash", "--", "star*?[x]", "semi;colon&$dollar`tick`",
    "~tilde", ".hidden", "..dots", "a" * 255, "é" * 127 + "x",
    "ends.with.part", "CAPS.TXT", "caps.txt", "back\\slash",
    "tab\tname", "trailing space ",
]
# Names spoolfs refuses for FTP (permanent, at once): the reason in the
# error.  A control character cannot travel on a command line; servers
# trim a trailing space (pure-ftpd stored "trailing space " as
# "trailing space"), so spoolfs refuses it on every server.
REFUSED = {
    "tab\tname": "file name contains a control character (0x09); FTP "
                 "cannot transfer it",
    "trailing space ": "a name in the path ends with a space; FTP servers "
                       "may drop it",
}
# Names a server refuses with its own reply.
SERVER_REFUSED = {
    "pure-ftpd": {"back\\slash": "553 Prohibited file name"},
    "vsftpd": {},
}
DEEP = "dir with space/ß#%'\"/-x/" + "d" * 255


def make_odd_tree(root: Path) -> list[str]:
    """The odd tree under ROOT; returns every file's relative path."""
    rels = []
    for i, n in enumerate(ODD_NAMES):
        write_file(root / n, pseudo_random(1000 + 37 * i, i),
                   mtime=1_400_000_000 + i)
        rels.append(n)
    for i, n in enumerate(ODD_NAMES[:8] + ["b" * 255, "trailing space "]):
        write_file(root / DEEP / n, pseudo_random(500 + i, 100 + i))
        rels.append(f"{DEEP}/{n}")
    write_file(root / "empty-0-bytes", b"")
    write_file(root / DEEP / "empty", b"")
    return rels + ["empty-0-bytes", f"{DEEP}/empty"]





def files_below(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            out[os.path.relpath(p, root)] = p
    return out


@pytest.mark.parametrize("ftpd", COPY_SERVERS, indirect=True)
def test_cp_r_odd_names_big_and_many_files(ftpd, sfs):
    add_nas(sfs, ftpd, connections=2)
    tree = sfs.src / "tree"
    odd = make_odd_tree(tree / "odd")
    make_flat_tree(tree / "many", 2000, 1500, dirs=20, seed=7)
    digest = make_big_file(tree / "big.bin", 32 << 20)
    refused = dict(REFUSED, **SERVER_REFUSED[ftpd.impl])
    bad = {"tree/odd/" + r: why for r in odd
           for name, why in refused.items() if r.split("/")[-1] == name}
    sfs.allow_log(r"^spoolfs: error: nas: upload of 'tree/odd/.*"
                  r"(control character \(0x09\)|ends with a space|"
                  r"553 Prohibited file name).*; kept in nas/\.failed/")
    mount(sfs)

    t0 = time.monotonic()
    run(["cp", "-r", tree, sfs.m("nas") / ""])
    src = files_below(sfs.src)
    assert len(src) == 2000 + len(odd) + 1
    todo = [sfs.m("nas", r) for r in src if r not in bad]

    sfs.wait_uploaded(*todo, timeout=240)
    wait_until(lambda: sorted(sfs.failed("nas")) == sorted(bad), 30,
               f"{sorted(bad)} in nas/.failed/",
               state=lambda: f"failed: {sfs.failed('nas')}\n"
               + describe(sfs, ftpd))
    took = time.monotonic() - t0
    print(f"{ftpd.impl} {ftpd.mode}: cp -r + upload of {len(src)} files "
          f"and 32 MiB: {took:.1f}s")

    # byte-exact on the server, nothing else there (no .spoolfs-* temps)
    on_server = files_below(home(ftpd))
    want = {r for r in src if r not in bad}
    assert sorted(set(on_server) - want) == [], "unexpected on the server"
    assert sorted(want - set(on_server)) == [], "missing on the server"
    for r in sorted(want):
        with open(src[r], "rb") as a, open(on_server[r], "rb") as b:
            assert a.read() == b.read(), f"{r!r} differs on the server"
    assert stray_names(home(ftpd)) == []
    assert not [p for p in home(ftpd).rglob(".spoolfs-*")]
    assert sha256(home(ftpd) / "tree/big.bin") == digest
    assert (home(ftpd) / "tree/odd/empty-0-bytes").stat().st_size == 0
    assert (home(ftpd) / "tree/odd" / DEEP / "empty").stat().st_size == 0
    assert os.listdir(home(ftpd)) == ["tree"]
    # the mtime went along (vsftpd: "MDTM time path", pure-ftpd: MFMT)
    for r in ("tree/many/d003/f00321.dat", "tree/big.bin"):
        assert int((home(ftpd) / r).stat().st_mtime) == \
            int(sfs.m("nas", r).stat().st_mtime), r

    # the refused ones: .failed/, at once, with the reason, full content
    for rel, why in bad.items():
        f = sfs.m("nas", ".failed/" + rel)
        err = sfs.xattr(f, "error")
        # control characters of the name are escaped in the message
        shown = re.sub(r"[\x00-\x1f\x7f]",
                       lambda m: f"\\x{ord(m.group()):02x}", rel)
        assert err.startswith(f"nas: upload of '{shown}' to "
                              f"{remote_prefix(ftpd)}"), err
        assert why in err, err
        assert sfs.xattr(f, "attempts") == "1", rel
        assert sfs.xattr(f, "state") == "failed"
        with open(src[rel], "rb") as a:
            assert f.read_bytes() == a.read()
    assert sfs.xattr(sfs.m("nas", "tree/big.bin"), "remote") == \
        remote_prefix(ftpd) + "tree/big.bin"
    assert sfs.pending("nas") == []

    # read back through the mount: the spool copy is gone, so this is RETR
    assert sha256(sfs.m("nas", "tree/big.bin")) == digest
    for r in ["tree/odd/" + n for n in ODD_NAMES[:12]] + \
            ["tree/odd/empty-0-bytes", f"tree/odd/{DEEP}/empty"]:
        if r not in bad:
            with open(src[r], "rb") as a:
                assert sfs.m("nas", r).read_bytes() == a.read(), r


# ------------------------------------------------------------ 2. TLS

def refused_for_its_certificate(sfs, srv, rel, data):
    """Write REL into nas; the server's certificate does not verify: it
    lands in nas/.failed/ after one attempt with its content, nothing on
    the server.  Returns (its path in .failed/, its error)."""
    write_file(sfs.m("nas", rel), data)
    f = wait_failed(sfs, srv, rel)
    err = sfs.xattr(f, "error")
    assert "certificate of 127.0.0.1 not verified" in err, err
    assert sfs.xattr(f, "attempts") == "1"       # permanent: no retries
    assert f.read_bytes() == data
    assert server_entries(srv) == []             # nothing written
    return f, err


@pytest.mark.parametrize("ftpd", TLS_SERVERS, indirect=True)
def test_self_signed_certificate_needs_tls_ca(ftpd, sfs):
    """Without tls_ca the self-signed certificate is refused before login
    (permanent: one attempt, .failed/); with tls_ca the same server works."""
    add_nas(sfs, ftpd, tls_ca=False, retries=5)
    add_nas(sfs, ftpd, name="ok")
    sfs.allow_log(r"^spoolfs: error: nas: upload of 'sub/x\.jpg' .* failed: "
                  r"connect to .*certificate .*; kept in nas/\.failed/")
    mount(sfs)
    data = pseudo_random(100_000, 3)
    f, err = refused_for_its_certificate(sfs, ftpd, "sub/x.jpg", data)
    assert err.startswith(f"nas: upload of 'sub/x.jpg' to "
                          f"{remote_prefix(ftpd)}sub/x.jpg failed: "), err
    assert "self-signed" in err or "self signed" in err, err
    assert "set tls_ca" in err, err
    if ftpd.impl == "vsftpd":                    # it logs every command
        assert not re.search(r'FTP command: .*"USER', ftpd.protocol_log())

    upload_one(sfs, ftpd, "with-ca/y.jpg", data, dest="ok")
    assert server_entries(ftpd) == ["with-ca", "with-ca/y.jpg"]
    assert len(re.findall(r"upload of 'sub/x\.jpg'", sfs.log())) == 1


@pytest.mark.parametrize("ftpd", [p for p in VSFTPD
                                  if p.values[0][1] == "explicit"],
                         indirect=True)
def test_tls_ca_renewed_while_mounted_then_mv_out_of_failed(ftpd, sfs,
                                                            tmp_path):
    """tls_ca holds the wrong certificate (the NAS's old one, say): the
    file is refused and kept in .failed/.  The right certificate is copied
    into that same file while the mount runs, and `mv` out of .failed/
    uploads it: no remount (spoolfs reads a CA file once, and again when
    it changes)."""
    ca = sfs.root / "nas-ca.pem"
    (tmp_path / "old").mkdir()
    shutil.copy(make_cert(str(tmp_path / "old"))[0], ca)
    add_nas(sfs, ftpd, tls_ca=str(ca), retries=5)
    sfs.allow_log(r"^spoolfs: error: nas: upload of 'renewed/x\.jpg' .* "
                  r"failed: connect to .*certificate .*; kept in "
                  r"nas/\.failed/")
    mount(sfs)
    data = pseudo_random(200_000, 5)
    f, _ = refused_for_its_certificate(sfs, ftpd, "renewed/x.jpg", data)

    shutil.copy(ftpd.cert, ca)                  # in place: the same inode
    dst = sfs.m("nas", "renewed/x.jpg")
    run(["mv", f, dst])
    sfs.wait_uploaded(dst, timeout=30)
    assert (home(ftpd) / "renewed/x.jpg").read_bytes() == data
    assert server_entries(ftpd) == ["renewed", "renewed/x.jpg"]
    assert sfs.failed("nas") == [] and sfs.pending("nas") == []


# ------------------------------------------------------------ 3. login

@pytest.mark.parametrize("ftpd", SERVERS, indirect=True)
def test_wrong_password_fails_at_once_with_the_530_reply(ftpd, sfs):
    wrong = "Wr0ng-" + ftpd.password[::-1]
    add_nas(sfs, ftpd, password=wrong, retries=5)
    sfs.allow_log(r"^spoolfs: error: nas: upload of 'k\.bin' .* failed: "
                  r"login as 'spoolfs-ftp' refused: 530 ")
    mount(sfs)
    write_file(sfs.m("nas", "k.bin"), b"login test")
    f = wait_failed(sfs, ftpd, "k.bin")
    err = sfs.xattr(f, "error")
    reply = {"vsftpd": "530 Login incorrect.",
             "pure-ftpd": "530 Login authentication failed"}[ftpd.impl]
    assert err == (f"nas: upload of 'k.bin' to {remote_prefix(ftpd)}k.bin "
                   f"failed: login as 'spoolfs-ftp' refused: {reply}"), err
    assert sfs.xattr(f, "attempts") == "1"       # permanent: no retries
    assert sfs.xattr(f, "state") == "failed"
    assert f.read_bytes() == b"login test"
    assert server_entries(ftpd) == []
    assert wrong not in sfs.log() and wrong not in err


# ------------------------------------------------------------ 4. CR / LF

CRLF_NAMES = ["x\r\nDELE canary.txt", "y\nDELE canary.txt",
              "z\rRNFR canary.txt", "dir\r\nRMD ./a/b.txt"]


@pytest.mark.parametrize("ftpd", SERVERS, indirect=True)
def test_cr_lf_in_a_name_is_refused_and_never_sent(ftpd, sfs):
    canary = home(ftpd) / "canary.txt"
    canary.write_bytes(b"do not touch\n")
    os.chown(canary, ftpd.uid, ftpd.gid)
    os.utime(canary, (1_300_000_000, 1_300_000_000))
    before = canary.stat()
    add_nas(sfs, ftpd, retries=3)
    sfs.allow_log(r"^spoolfs: error: nas: upload of '[xyzd]")
    mount(sfs, "-d")            # -d logs every command the daemon sends
    upload_one(sfs, ftpd, "ok.txt", b"fine")     # commands do reach the log
    assert re.search(r"^spoolfs: nas: > (STOR|RNTO) /\S*ok\.txt$", sfs.log(),
                     re.M), sfs.log_tail()
    for i, name in enumerate(CRLF_NAMES):
        write_file(sfs.m("nas", name), pseudo_random(100, i))
    for i, name in enumerate(CRLF_NAMES):
        f = wait_failed(sfs, ftpd, name)
        err = sfs.xattr(f, "error")
        assert "file name contains a line break; FTP cannot transfer it" \
            in err, repr(err)
        assert sfs.xattr(f, "attempts") == "1"   # permanent: at once
        assert f.read_bytes() == pseudo_random(100, i)
        # the name is in the message with its CR/LF escaped, never raw
        assert "\r" not in err and "\n" not in err, repr(err)
        assert "\\x0a" in err or "\\x0d" in err, repr(err)
    # nor can a name forge a log line: what followed a CR or LF in a name
    # never starts a line of the log
    assert "upload of 'y\\x0aDELE canary.txt'" in sfs.log(), sfs.log_tail()
    assert not re.search(r"^(DELE|RNFR|RMD) ", sfs.log(), re.M), \
        sfs.log_tail()
    after = canary.stat()
    assert canary.read_bytes() == b"do not touch\n"
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
        (before.st_ino, before.st_size, before.st_mtime_ns)
    # refused before a byte went out: even a name in the top directory,
    # whose temp (.spoolfs-TAG-ID-GEN.part) would hold no byte of it, got no
    # temp; the one upload the server saw is ok.txt's
    assert server_entries(ftpd) == ["canary.txt", "ok.txt"], \
        f"{server_entries(ftpd)}\n{sfs.describe()}"
    # not one byte of those names on the control connection: every command
    # the daemon sent is in its -d log ...
    sent = re.findall(r"^spoolfs: nas: > (.*)$", sfs.log(), re.M)
    assert sent and not [c for c in sent if re.search(
        r"canary|RMD|/(x|y|z|dir)(\?|$)", c)], sent
    stores = [c for c in sent if re.match(r"(STOR|APPE|RNFR) ", c)]
    assert len(stores) == 2 and all(".spoolfs-" in c for c in stores), \
        stores                  # ok.txt's STOR of its temp and RNFR of it
    # ... and, where the server logs commands (vsftpd), in its log
    if ftpd.impl == "vsftpd":
        cmds = re.findall(r'FTP command: Client "127\.0\.0\.1", "(.*)"',
                          ftpd.protocol_log())
        assert any(c.startswith("STOR ") for c in cmds), cmds
        assert not [c for c in cmds if re.search(
            r"canary|RMD|/(x|y|z|dir)(\?|$)", c)], cmds


# ------------------------------------------------------------ 5. resume

@pytest.mark.parametrize("ftpd", SERVERS, indirect=True)
def test_server_killed_mid_upload_resumes(ftpd, sfs):
    size = 100 * 1000 * 1000
    add_nas(sfs, ftpd, max_rate="40M", connections=1, retries=10,
            backoff="300ms..1s", stall_timeout="5s")
    src = sfs.src / "big.bin"
    digest = make_big_file(src, size, seed=5)
    mount(sfs)
    p = sfs.m("nas", "big.bin")
    run(["cp", src, p])
    t0 = time.monotonic()

    # kill the server (listener and sessions) once a good part is on it
    part = []

    def some_sent():
        got = list(home(ftpd).glob(".spoolfs-*.part"))
        part[:] = got
        return got and got[0].stat().st_size > 25_000_000
    wait_until(some_sent, 30, "25 MB of big.bin on the server",
               state=lambda: describe(sfs, ftpd, [p]), interval=0.05)
    ftpd.kill()
    on_server = part[0].stat().st_size
    assert on_server < size, "the upload finished before the kill"
    ftpd.start()         # same port, same certificate

    sfs.wait_uploaded(p, timeout=60)
    took = time.monotonic() - t0
    assert sha256(home(ftpd) / "big.bin") == digest
    assert server_entries(ftpd) == ["big.bin"]       # no temp left
    m = re.search(r"^spoolfs: nas: resuming 'big\.bin' at byte (\d+) of "
                  rf"{size}$", sfs.log(), re.M)
    assert m, "no resume line\n" + sfs.log_tail()
    resumed_at = int(m.group(1))
    # resumed from what the killed server had written, not from 0
    assert 20_000_000 < resumed_at <= on_server, (resumed_at, on_server)
    # the daemon saw the kill: the stream that sent the part written while
    # cp ran handed the file back, or an attempt failed
    assert re.search(r"^spoolfs: nas: (streaming 'big\.bin' stopped|"
                     r"upload of 'big\.bin' .* failed): ", sfs.log(), re.M), \
        sfs.log_tail()
    # a stream handed back is no attempt (SEMANTICS.md): when the kill hit
    # it and the server was back by the first try, one attempt did it all
    attempts = int(sfs.xattr(p, "attempts"))
    assert attempts >= 1
    assert re.search(rf"nas: uploaded 'big\.bin' to {ftpd.scheme}://\S+ "
                     rf"\({size} bytes, attempt {attempts}\)", sfs.log())
    assert sfs.xattr(p, "progress") == str(size)
    if ftpd.impl == "vsftpd":
        # the second attempt appended to the partial temp
        cmds = re.findall(r'FTP command: Client "127\.0\.0\.1", "(\w+) ',
                          ftpd.protocol_log())
        assert "APPE" in cmds, cmds
    print(f"{ftpd.impl} {ftpd.mode}: killed at {on_server} bytes, resumed "
          f"at {resumed_at}, {attempts} attempts, {took:.1f}s")
    sfs.wait_spool_empty()


# ------------------------------------------------------------ 6. down

@pytest.mark.parametrize("ftpd", SERVERS, indirect=True)
def test_server_down_past_retries_then_mv_out_of_failed(ftpd, sfs):
    add_nas(sfs, ftpd, retries=2, backoff="50ms..200ms")
    sfs.allow_log(r"^spoolfs: error: nas: upload of 'down/x\.bin' .* failed: "
                  r"connect to 127\.0\.0\.1:\d+ failed: .*\(out of retries\)")
    mount(sfs)
    ftpd.kill()
    data = pseudo_random(300_000, 11)
    write_file(sfs.m("nas", "down/x.bin"), data)
    f = wait_failed(sfs, ftpd, "down/x.bin")
    err = sfs.xattr(f, "error")
    assert err.startswith(f"nas: upload of 'down/x.bin' to "
                          f"{remote_prefix(ftpd)}down/x.bin failed: connect "
                          f"to 127.0.0.1:{ftpd.port} failed: "), err
    assert "Couldn't connect to server" in err, err
    assert sfs.xattr(f, "attempts") == "3"     # 1 + retries
    assert sfs.xattr(f, "state") == "failed"
    assert f.read_bytes() == data

    ftpd.start()
    dst = sfs.m("nas", "down/x.bin")
    run(["mv", f, dst])
    assert "down/x.bin" not in sfs.failed("nas")
    sfs.wait_uploaded(dst, timeout=30)
    assert sfs.xattr(dst, "attempts") == "1"   # attempts start again
    assert (home(ftpd) / "down/x.bin").read_bytes() == data
    assert server_entries(ftpd) == ["down", "down/x.bin"]
    assert sfs.failed("nas") == [] and sfs.pending("nas") == []


@pytest.mark.parametrize("ftpd", [SERVERS[0]], indirect=True)
def test_lost_reply_to_the_commit_then_renamed_sends_nothing_twice(ftpd,
                                                                    sfs):
    """The server renames the finished temp to the file's name, and the
    link drops before its 250 reply arrives.  The file is renamed in the
    mount before the retry: the retry finds no temp, and the journal's
    note of the commit (written before RNTO went out) leads it to the
    copy, which it moves to the new name; no byte is sent again.  Before,
    it uploaded the file again as g.bin and f.bin stayed on the server."""
    proxy = ControlProxy(ftpd.port)
    try:
        pw = sfs.root / "nas.pass"
        pw.write_text(ftpd.password + "\n")
        os.chmod(pw, 0o600)
        sfs.add_dest("nas", url=f"ftp://127.0.0.1:{proxy.port}/",
                     user=ftpd.user, password_file=pw, backoff="3s..3s",
                     stall_timeout="10s", connect_timeout="10s")
        sfs.allow_log(r"nas: upload of 'a/f\.bin' .* failed: ")
        mount(sfs)
        proxy.drop_reply("RNTO")
        data = pseudo_random(300_000, 21)
        write_file(sfs.m("nas", "a/f.bin"), data)
        wait_until(proxy.dropped.is_set, 30, "the reply to RNTO to be lost",
                   state=lambda: describe(sfs, ftpd))
        assert (home(ftpd) / "a/f.bin").read_bytes() == data
        g = sfs.m("nas", "a/g.bin")
        run(["mv", sfs.m("nas", "a/f.bin"), g])
        sfs.wait_uploaded(g, timeout=30)
        assert (home(ftpd) / "a/g.bin").read_bytes() == data
        assert server_entries(ftpd) == ["a", "a/g.bin"], describe(sfs, ftpd)
        after = proxy.commands[proxy.dropped_at:]
        assert not [c for c in after if c.startswith(("STOR", "APPE"))], after
        assert [c.split(" ", 1)[0] for c in after
                if c.startswith(("RNFR", "RNTO"))] == ["RNFR", "RNTO"], after
        assert "'a/g.bin' is on the server already, as 'a/f.bin'" in \
            sfs.log(), sfs.log_tail()
        assert sfs.xattr(g, "error") == ""
        assert sfs.xattr(g, "remote") == \
            f"ftp://{ftpd.user}@127.0.0.1:{proxy.port}/a/g.bin"
    finally:
        proxy.close()


# ------------------------------------------------------------ 7. passwords




@pytest.mark.parametrize("ftpd", [SERVERS[0], SERVERS[3]], indirect=True)
def test_renames_onto_names_another_copy_still_holds(ftpd, sfs):
    """As for SFTP: RNTO over a name another file's copy still holds waits
    for that copy to move (vsftpd and pure-ftpd both overwrite on RNTO)."""
    add_nas(sfs, ftpd, connections=1, max_rate="200K")
    mount(sfs)
    rename_onto_held_names(sfs, "nas", home(ftpd))


@pytest.mark.parametrize("ftpd", [SERVERS[0], SERVERS[4]], indirect=True)
def test_renamed_or_removed_directories_leave_no_empty_one_behind(ftpd, sfs):
    """As for SFTP: RMD of each directory the files left (550 for one that
    is not empty)."""
    add_nas(sfs, ftpd, delete_remote="yes")
    mount(sfs)
    emptied_directories_go(sfs, "nas", home(ftpd))


@pytest.mark.parametrize("ftpd", VSFTPD + SERVERS[4:5], indirect=True)
def test_passwords_never_appear(ftpd, sfs):
    """Neither the right password nor a wrong one reaches the daemon's log
    (even with -d, which logs every FTP command), the journal or the
    xattrs, after a good upload, a refused login and a retry."""
    wrong = "Wr0ng-" + ftpd.password[::-1]
    add_nas(sfs, ftpd)
    add_nas(sfs, ftpd, name="bad", password=wrong)
    sfs.allow_log(r"^spoolfs: error: bad: upload of 'w\.txt' .* failed: "
                  r"login as 'spoolfs-ftp' refused: 530 ")
    mount(sfs, "-d")
    upload_one(sfs, ftpd, "ok/good.txt", b"fine")
    write_file(sfs.m("bad", "w.txt"), b"refused")
    wait_failed(sfs, ftpd, "w.txt", dest="bad")
    xattrs = all_xattrs(sfs.mnt)
    assert f"user.spoolfs.remote={ftpd.scheme}://" in xattrs
    assert "refused: 530" in xattrs
    assert "PASS ****" in sfs.log()            # the login is in the log
    sfs.unmount()     # the journal and log are complete

    journal = b"".join(p.read_bytes() for p in sorted(sfs.spool.rglob("*"))
                       if p.is_file() and p.name.startswith("journal.db"))
    assert (sfs.spool / "journal.db").is_file() and journal
    places = {
        "daemon log": sfs.log(),
        "journal (SPOOL/journal.db*, as bytes)": journal.decode("latin-1"),
        "xattrs": xattrs,
        "config": sfs.cfg_path.read_text(),
    }
    for where, text in places.items():
        for secret in (ftpd.password, wrong):
            assert secret not in text, f"a password appears in the {where}"
    for secret in (ftpd.password, wrong):
        assert secret.encode("utf-16-le") not in journal
