"""The fallback chain end to end, through the real mount: the photographer's
setup of DESIGN.md, a NAS reached over FTPS with SFTP on the same host as
the fallback:

    [dest nas]        ftps:// (vsftpd, explicit TLS), fallback = nas-sftp
    [dest nas-sftp]   sftp:// (OpenSSH sshd on the same 127.0.0.1)

  - FTPS down: once nas has spent its retries, the files land through
    SFTP; user.spoolfs.remote shows the sftp:// URL and the log says which
    destination took them;
  - both down: the files end in nas/.failed/ (the destination they were
    written to), with the last error;
  - FTPS back: `mv` out of nas/.failed/ and they arrive over FTPS (the
    chain starts again at nas).

Needs root (vsftpd local-user logins), vsftpd and sshd; skips without
them unless SPOOLFS_REQUIRE_FTP=1 / SPOOLFS_REQUIRE_SFTP=1.

Run: SPOOLFS_BIN=build/spoolfs /usr/bin/python3 -m pytest \
         tests/integration/test_fallback.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ftp_server import FtpServer, have_vsftpd
from spoolfs_harness import (child_env, pseudo_random, run, unavailable,
                             wait_until, write_file)
from sshd_server import SSHD, SshServer

FILES = {"2026/DSC_0001.NEF": 700_000, "2026/DSC_0002.NEF": 1_300_000,
         "2026/05/DSC_0003.JPG": 90_000, "empty.txt": 0}


@pytest.fixture
def ftps():
    if os.geteuid() != 0:
        unavailable("vsftpd local-user logins need root", "SPOOLFS_REQUIRE_FTP")
    if not have_vsftpd():
        unavailable("no /usr/sbin/vsftpd (apt-get install vsftpd)",
              "SPOOLFS_REQUIRE_FTP")
    srv = FtpServer("explicit")
    try:
        yield srv.start()
    finally:
        srv.close()


@pytest.fixture
def sshd():
    if not os.access(SSHD, os.X_OK):
        unavailable("no /usr/sbin/sshd (apt-get install openssh-server)",
              "SPOOLFS_REQUIRE_SFTP")
    srv = SshServer()
    try:
        yield srv.start()
    finally:
        srv.close()




def setup_chain(sfs, ftps: FtpServer, sshd: SshServer, **nas_keys):
    pw = sfs.root / "nas.pass"
    pw.write_text(ftps.password + "\n")
    os.chmod(pw, 0o600)
    keys = {"retries": 2, "backoff": "50ms..200ms"}
    keys.update(nas_keys)
    sfs.add_dest("nas", url=ftps.url(), user=ftps.user, password_file=pw,
                 tls_mode="explicit", tls_ca=ftps.cert, connect_timeout="10s",
                 stall_timeout="10s", fallback="nas-sftp", **keys)
    sfs.add_dest("nas-sftp", url=sshd.url(), identity=sshd.client_key,
                 known_hosts=sshd.known_hosts, retries=1,
                 backoff="50ms..200ms", connect_timeout="10s")


def ftps_url(ftps: FtpServer, rel: str) -> str:
    return f"ftps://{ftps.user}@127.0.0.1:{ftps.port}/{rel}"


def sftp_url(sshd: SshServer, rel: str) -> str:
    return f"{sshd.url()}/{rel}"


def entries(root) -> list[str]:
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file())


def write_photos(sfs) -> dict[str, bytes]:
    data = {}
    for i, (rel, size) in enumerate(FILES.items()):
        data[rel] = pseudo_random(size, 40 + i)
        write_file(sfs.m("nas", rel), data[rel])
    return data


def describe(sfs, ftps, sshd) -> str:
    return (sfs.describe([sfs.m("nas", r) for r in FILES])
            + f"\nftps home: {entries(ftps.home)}"
            + f"\nsftp root: {entries(sshd.root)}")


def test_ftps_down_files_land_through_sftp(ftps, sshd, sfs):
    setup_chain(sfs, ftps, sshd)
    sfs.allow_log(r"^spoolfs: warning: nas: upload of '[^']+' to ftps://\S+ "
                  r"failed: connect to 127\.0\.0\.1:\d+ failed: .*; trying "
                  r"fallback destination 'nas-sftp'$")
    sfs.mount(env=child_env())
    ftps.kill()
    data = write_photos(sfs)
    paths = [sfs.m("nas", r) for r in FILES]
    sfs.wait_uploaded(*paths, timeout=60)

    # every file on the SFTP server, byte for byte; nothing over FTPS
    assert entries(sshd.root) == sorted(FILES)
    for rel, want in data.items():
        assert (sshd.root / rel).read_bytes() == want, rel
    assert entries(ftps.home) == []
    log = sfs.log()
    for rel in FILES:
        p = sfs.m("nas", rel)
        assert sfs.xattr(p, "remote") == sftp_url(sshd, rel)
        assert sfs.xattr(p, "state") == "uploaded"
        # nas spent its 1 + 2 attempts before the fallback took over
        tries = re.findall(rf"^spoolfs: (?:warning: )?nas: upload of "
                           rf"'{re.escape(rel)}' to ftps://.*$", log, re.M)
        assert len(tries) == 3, tries
        assert "(attempt 1 of 3," in tries[0] and \
            "(attempt 2 of 3," in tries[1], tries
        assert tries[2].endswith("trying fallback destination 'nas-sftp'")
        assert re.search(rf"^spoolfs: nas-sftp: uploaded '{re.escape(rel)}' "
                         rf"to {re.escape(sftp_url(sshd, rel))} "
                         rf"\({FILES[rel]} bytes, attempt 1\)$", log, re.M), \
            rel
    # the files stay where they were written; nas-sftp's own dir is empty
    assert sfs.failed("nas") == [] and sfs.pending("nas") == []
    assert os.listdir(sfs.m("nas-sftp")) == [] or \
        sorted(os.listdir(sfs.m("nas-sftp"))) == [".failed", ".pending"]
    # read back through the mount: fetched from where the file landed
    rel = "2026/DSC_0002.NEF"
    sfs.wait_spool_empty()
    assert sfs.m("nas", rel).read_bytes() == data[rel]


def test_both_down_then_ftps_back_mv_out_of_failed(ftps, sshd, sfs):
    setup_chain(sfs, ftps, sshd)
    sfs.allow_log(r"^spoolfs: warning: nas: upload of .* trying fallback "
                  r"destination 'nas-sftp'$",
                  r"^spoolfs: error: nas-sftp: upload of '[^']+' to "
                  r"sftp://\S+ failed: cannot connect to 127\.0\.0\.1:\d+.*"
                  r"\(out of retries\); kept in nas/\.failed/")
    sfs.mount(env=child_env())
    ftps.kill()
    sshd.kill()
    data = write_photos(sfs)

    wait_until(lambda: sfs.failed("nas") == sorted(FILES), 60,
               "every file in nas/.failed/",
               state=lambda: describe(sfs, ftps, sshd))
    for rel, want in data.items():
        f = sfs.m("nas", ".failed/" + rel)
        assert f.read_bytes() == want
        assert sfs.xattr(f, "state") == "failed"
        err = sfs.xattr(f, "error")
        # the last error: the fallback's, out of its 1 + 1 attempts
        assert err.startswith(f"nas-sftp: upload of '{rel}' to "
                              f"{sftp_url(sshd, rel)} failed: cannot "
                              f"connect to 127.0.0.1:{sshd.port}"), err
        assert sfs.xattr(f, "attempts") == "2"
        # moved, not copied: the daemon no longer knows the old path (the
        # kernel may show its cached entry for up to entry_timeout = 1 s)
        assert sfs.state(sfs.m("nas", rel)) in ("<absent>", "<ENOENT>")
        wait_until(lambda: not sfs.m("nas", rel).exists(), 5,
                   f"nas/{rel} to disappear from the listing")
    assert sfs.failed("nas-sftp") == []
    assert entries(ftps.home) == [] and entries(sshd.root) == []

    # FTPS back (SFTP still down): mv out of .failed/ -> over FTPS
    ftps.start()
    for rel in FILES:     # (the emptied nas/2026/05/ is still there)
        run(["mv", sfs.m("nas", ".failed/" + rel), sfs.m("nas", rel)])
    paths = [sfs.m("nas", r) for r in FILES]
    sfs.wait_uploaded(*paths, timeout=60)
    assert entries(ftps.home) == sorted(FILES)
    for rel, want in data.items():
        assert (Path(ftps.home) / rel).read_bytes() == want, rel
        p = sfs.m("nas", rel)
        assert sfs.xattr(p, "remote") == ftps_url(ftps, rel)
        assert sfs.xattr(p, "attempts") == "1"
        assert re.search(rf"^spoolfs: nas: uploaded '{re.escape(rel)}' to "
                         rf"{re.escape(ftps_url(ftps, rel))} ",
                         sfs.log(), re.M), rel
    assert entries(sshd.root) == []
    assert sfs.failed("nas") == [] and sfs.pending("nas") == []


def test_a_name_ftp_cannot_store_lands_through_the_fallback(ftps, sshd, sfs):
    """A name FTP can never store (a line break, a trailing space) is
    refused by nas before a byte goes out, at once (no retries: it is
    permanent), and the fallback, which can store it, takes the file."""
    setup_chain(sfs, ftps, sshd)
    sfs.allow_log(r"^spoolfs: warning: nas: upload of .* to ftps://.* "
                  r"failed: (file name contains a line break|a name in the "
                  r"path ends with a space).*; trying fallback destination "
                  r"'nas-sftp'$")
    sfs.mount(env=child_env())
    names = ["line\nbreak.txt", "space at the end /in it.jpg"]
    data = {n: pseudo_random(50_000 + i, 70 + i) for i, n in enumerate(names)}
    for n, d in data.items():
        write_file(sfs.m("nas", n), d)
    sfs.wait_uploaded(*[sfs.m("nas", n) for n in names], timeout=60)
    for n, d in data.items():
        assert (sshd.root / n).read_bytes() == d, n
        assert sfs.xattr(sfs.m("nas", n), "remote").startswith(sshd.url())
    # nothing went over FTPS: no temp, no file
    assert list(Path(ftps.home).rglob("*")) == []
    log = sfs.log()
    for why in ("file name contains a line break",
                "a name in the path ends with a space"):
        tries = re.findall(rf"^spoolfs: (?:warning: )?nas: upload of .*: "
                           rf"{why}.*$", log, re.M)
        assert len(tries) == 1 and tries[0].endswith(
            "trying fallback destination 'nas-sftp'"), tries
