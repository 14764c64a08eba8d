"""The ftp:// and ftps:// backends against real vsftpd on 127.0.0.1.

Each test starts its own server (ftp_server.FtpServer) in one of three
modes -- plain FTP, explicit FTPS (AUTH TLS, require_ssl_reuse=YES) and
implicit FTPS -- writes a spoolfs config for it and drives the backend
through two C programs from the build directory (env SPOOLFS_BUILD, else
<repo>/build):

  tests/unit/conformance CONFIG nas   the suite every backend passes
  tests/unit/ftp_probe CONFIG nas ... one connection, command by command

No FUSE mount is involved, except in test_upload_commands_per_file, which
counts the commands of one upload through the real daemon.  Needs root
(vsftpd local-user logins).
Run:  /usr/bin/python3 -m pytest tests/integration/test_ftp_backend.py
"""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import time

import pytest

from ftp_server import FtpServer, have_vsftpd, make_cert, pure_ftpd_path
from spoolfs_harness import child_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("SPOOLFS_BUILD", os.path.join(REPO, "build"))
CONFORMANCE = os.path.join(BUILD, "tests", "unit", "conformance")
PROBE = os.path.join(BUILD, "tests", "unit", "ftp_probe")
TRANSIENT = {"connect", "timeout", "reset", "stall", "busy", "noroot",
             "nospace", "protocol", "io"}


def _skip_reason():
    if os.geteuid() != 0:
        return "vsftpd local-user logins need root"
    if not have_vsftpd():
        return "vsftpd is not installed (apt-get install vsftpd)"
    for b in (CONFORMANCE, PROBE):
        if not os.access(b, os.X_OK):
            return f"{b} not built (meson setup build && ninja -C build)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None,
                                reason=_skip_reason() or "")

MODES = ["plain", "explicit", "implicit"]


@pytest.fixture
def server(request):
    """A started FtpServer; the mode comes from indirect parametrization."""
    param = getattr(request, "param", "plain")
    mode, _, variant = param.partition("-")
    srv = FtpServer(mode, impl="pure-ftpd" if variant == "pure" else "vsftpd",
                    chroot=variant == "chroot")
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


SANITIZER = re.compile(r"Sanitizer|runtime error:")


def no_sanitizer_report(stderr):
    """A sanitizer build (-Db_sanitize=...) must stay silent."""
    m = SANITIZER.search(stderr or "")
    assert not m, stderr[max(0, m.start() - 200):m.start() + 3000]


def probe(cfg, *args, env=None, timeout=120):
    """Run ftp_probe CONFIG nas ARGS; return (rc, stdout lines, stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([PROBE, cfg, "nas", *args], capture_output=True,
                       text=True, timeout=timeout, env=e)
    no_sanitizer_report(r.stderr)
    return r.returncode, r.stdout.splitlines(), r.stderr


def conformance(cfg):
    r = subprocess.run([CONFORMANCE, cfg, "nas"], capture_output=True,
                       text=True, timeout=600)
    no_sanitizer_report(r.stderr)
    return r


def results(lines):
    """The ok/error lines of a probe run, progress lines dropped."""
    return [l for l in lines if not l.startswith("progress ")]


def error_of(lines, cmd):
    """(code, message) of 'error CMD CODE MS: MESSAGE', or None."""
    for l in lines:
        m = re.match(r"error (\S+) (\S+) (\d+): (.*)$", l)
        if m and m.group(1) == cmd:
            return m.group(2), m.group(4)
    return None


def write_file(path, size, seed=0):
    """SIZE bytes that differ per position and seed."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            chunk = hashlib.sha256(block[:64] + i.to_bytes(8, "big")).digest() \
                + block[32:]
            f.write(chunk[:left])
            left -= min(left, len(chunk))
            i += 1


def same_file(a, b):
    return (os.path.getsize(a) == os.path.getsize(b)
            and open(a, "rb").read() == open(b, "rb").read())


def spki_pin(cert):
    """curl's sha256//BASE64 pin of CERT's public key."""
    der = subprocess.run(
        "openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin "
        "-outform der" % cert, shell=True, check=True,
        capture_output=True).stdout
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


# ---- the shared suite ------------------------------------------------------

@pytest.mark.parametrize("server", MODES + ["plain-chroot", "explicit-chroot"],
                         indirect=True)
def test_conformance(server, tmp_path):
    cfg = server.write_config(str(tmp_path))
    r = conformance(cfg)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-8000:]
    assert " 0 failed" in r.stdout
    # Every session reused its TLS session on the data connections.
    assert '"522 ' not in server.protocol_log()
    # The suite leaves only its (empty) run directory behind.
    left = [n for n in os.listdir(server.home)
            if not n.startswith("spoolfs-conformance-")]
    assert left == []
    for n in os.listdir(server.home):
        for dirpath, _dirs, files in os.walk(os.path.join(server.home, n)):
            assert files == [], f"files left in {dirpath}: {files}"


@pytest.mark.skipif(pure_ftpd_path() is None,
                    reason="pure-ftpd not unpacked: apt-get download pure-ftpd "
                    "pure-ftpd-common && dpkg-deb -x each into /opt/pure-ftpd")
@pytest.mark.parametrize("server", ["plain-pure", "explicit-pure"],
                         indirect=True)
def test_conformance_pure_ftpd(server, tmp_path):
    """pure-ftpd passes too, except that it will not store a backslash.

    Its policy, not ours: "553 Prohibited file name" for 'back\\slash.txt',
    which the backend reports as a name error (permanent, .failed/).
    """
    cfg = server.write_config(str(tmp_path))
    r = conformance(cfg)
    failed = int(re.search(r"(\d+) failed", r.stdout).group(1))
    assert int(re.search(r"(\d+) passed", r.stdout).group(1)) >= 600
    if failed:
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert all("back\\slash" in l or "rc_ ==" in l
                   or "check failed" in l or "is \"ok\"" in l
                   for l in lines), r.stderr[-4000:]
        assert "553 Prohibited file name" in r.stderr
        assert failed <= 12, r.stderr[-4000:]


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_check(server, tmp_path):
    cfg = server.write_config(str(tmp_path))
    rc, out, err = probe(cfg, "check", "sub/dir")
    assert rc == 0, out + [err]
    assert out == ["ok check"]


# ---- TLS -------------------------------------------------------------------

@pytest.mark.parametrize("server", ["explicit", "implicit"], indirect=True)
def test_self_signed_without_ca_is_refused(server, tmp_path):
    cfg = server.write_config(str(tmp_path), tls_ca=False)
    rc, out, _ = probe(cfg, "connect")
    assert rc == 1
    code, msg = error_of(out, "connect")
    assert code == "tls", out
    assert "certificate" in msg and "tls_ca" in msg
    # Refused before login: the server never saw our user.
    assert not re.search(r'FTP command: .*"USER', server.protocol_log())


@pytest.mark.parametrize("server", ["explicit", "implicit"], indirect=True)
def test_tls_pin(server, tmp_path):
    pin = spki_pin(server.cert)
    cfg = server.write_config(str(tmp_path), tls_ca=False,
                              extra={"tls_pin": pin})
    rc, out, err = probe(cfg, "check")
    assert rc == 0, out + [err]
    wrong = "sha256//" + base64.b64encode(b"x" * 32).decode()
    cfg = server.write_config(str(tmp_path), tls_ca=False,
                              extra={"tls_pin": wrong})
    rc, out, _ = probe(cfg, "connect")
    assert error_of(out, "connect")[0] == "tls", out


def test_explicit_ftps_refuses_plain_server(tmp_path):
    """ftps:// against a server without TLS: no login in clear text."""
    with FtpServer("plain") as srv:
        cfg = srv.write_config(str(tmp_path))
        with open(cfg) as f:
            text = f.read().replace("url = ftp://", "url = ftps://")
        with open(cfg, "w") as f:
            f.write(text)
        rc, out, _ = probe(cfg, "connect")
        code, msg = error_of(out, "connect")
        assert code == "tls", out
        assert not re.search(r'FTP command: .*"USER', srv.protocol_log())


@pytest.mark.parametrize("server", ["explicit"], indirect=True)
def test_tls_verify_no(server, tmp_path):
    cfg = server.write_config(str(tmp_path), tls_ca=False,
                              extra={"tls_verify": "no"})
    rc, out, err = probe(cfg, "check")
    assert rc == 0, out + [err]


@pytest.mark.parametrize("cache", ["on", "off"])
@pytest.mark.parametrize("server", ["explicit", "implicit"], indirect=True)
def test_ca_file_read_once_and_again_when_it_changes(server, tmp_path, cache):
    """tls_ca is read once per process, not once per TLS connection (each
    file is a data connection of its own), and read again when the file
    changes: a wrong certificate put in its place refuses the next
    connection, a file that is not a certificate is a config error, and the
    right one put back works -- all without a restart, exactly as with the
    cache turned off (SPOOLFS_FTP_CA_CACHE=0: curl reads the file itself)."""
    ca = str(tmp_path / "ca.pem")
    shutil.copy(server.cert, ca)
    os.mkdir(tmp_path / "other")
    wrong, _ = make_cert(str(tmp_path / "other"))
    junk = str(tmp_path / "junk.pem")
    with open(junk, "w") as f:
        f.write("not a certificate\n")
    src = str(tmp_path / "x")
    write_file(src, 5000)
    cfg = server.write_config(str(tmp_path), tls_ca=False,
                              extra={"tls_ca": ca})
    args = []
    for i in range(5):
        args += ["put", src, f"f{i}", "--"]
    args += ["ca_loads", "--",
             "install", wrong, ca, "--", "reconnect", "--", "ca_loads", "--",
             "install", junk, ca, "--", "reconnect", "--",
             "install", server.cert, ca, "--", "reconnect", "--",
             "put", src, "after", "--", "ca_loads"]
    env = {"SPOOLFS_FTP_CA_CACHE": "0"} if cache == "off" else {}
    rc, out, err = probe(cfg, *args, env=env)
    res = results(out)
    loads = [l.split()[2] for l in res if l.startswith("ok ca_loads")]
    assert len(loads) == 3, res
    if loads[0] != "off":           # built with backends/ftp_ca.c
        # 1 control + 5 data connections: one read; then one per change
        # that loads (the junk does not)
        assert loads == (["1", "2", "3"] if cache == "on" else ["0"] * 3), res
    code, msg = error_of(out, "reconnect")
    assert code == "tls", res
    assert "certificate of 127.0.0.1 not verified" in msg, msg
    bad = [l for l in res if l.startswith("error reconnect")]
    assert len(bad) == 2, res
    assert bad[1].endswith(f"failed: cannot read a CA certificate from "
                           f"tls_ca '{ca}'"), res
    assert res[-2] == "ok put 5000", res
    assert rc == 1 and len([l for l in res if l.startswith("error")]) == 2
    for name in [f"f{i}" for i in range(5)] + ["after"]:
        assert same_file(src, os.path.join(server.home, name)), name


# ---- login, names ----------------------------------------------------------

@pytest.mark.parametrize("server", MODES, indirect=True)
def test_wrong_password(server, tmp_path):
    bad = "Wrong-Pass-7731"
    cfg = server.write_config(str(tmp_path), password=bad)
    rc, out, err = probe(cfg, "connect", env={"FTP_PROBE_DEBUG": "1"})
    assert rc == 1
    code, msg = error_of(out, "connect")
    assert code == "auth", out
    assert "530" in msg and "Login incorrect" in msg
    assert "spoolfs-ftp" in msg
    assert bad not in msg and bad not in err
    assert "PASS ****" in err        # the debug log hides it


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_password_never_in_debug_log(server, tmp_path):
    cfg = server.write_config(str(tmp_path))
    rc, out, err = probe(cfg, "check", env={"FTP_PROBE_DEBUG": "1"})
    assert rc == 0
    assert server.password not in err and server.password not in "".join(out)
    assert "PASS ****" in err


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_crlf_name_refused(server, tmp_path):
    canary = os.path.join(server.home, "canary.txt")
    with open(canary, "w") as f:
        f.write("do not touch\n")
    os.chown(canary, server.uid, server.gid)
    before = os.stat(canary)
    src = str(tmp_path / "x")
    write_file(src, 100)
    cfg = server.write_config(str(tmp_path))
    evil = ["x\r\nDELE canary.txt", "y\nDELE canary.txt", "z\rRNFR canary.txt"]
    args = []
    for name in evil:
        args += ["put", src, name, "--", "rename", "canary.txt", name, "--",
                 "mkdirs", name + "/d", "--", "rm", name, "--",
                 "stat", name, "--", "mtime", name, "0", "--"]
    args += ["stat", "canary.txt"]
    rc, out, _ = probe(cfg, *args)
    res = results(out)
    errors = [l for l in res if l.startswith("error ")]
    assert len(errors) == 6 * len(evil), res
    for l in errors:
        assert " name " in l and "line break" in l and "FTP cannot" in l, l
    assert res[-1].startswith("ok stat size=13"), res
    after = os.stat(canary)
    assert open(canary).read() == "do not touch\n"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Not one of those commands reached the server.
    log = server.protocol_log()
    assert not re.search(r'FTP command: .*"(STOR|APPE|DELE|RNFR|RNTO|MKD|MDTM|SIZE) [xyz]', log)
    assert not re.search(r'FTP command: .*"(DELE|RNFR|RNTO|MKD) ', log)


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_odd_names_stay_names(server, tmp_path):
    """Names that look like URL syntax or commands land literally."""
    src = str(tmp_path / "x")
    write_file(src, 1000)
    cfg = server.write_config(str(tmp_path))
    names = ["a b/%2e%2e/x", "q?x=1#frag", "semi;DELE x", "..foo", "~user"]
    args = []
    for n in names:
        d = os.path.dirname(n)
        if d:
            args += ["mkdirs", d, "--"]
        args += ["put", src, n, "--"]
    rc, out, _ = probe(cfg, *args)
    assert rc == 0, out
    for n in names:
        assert same_file(src, os.path.join(server.home, n)), n


# ---- connections, failures, resume ----------------------------------------

@pytest.mark.parametrize("server", MODES, indirect=True)
def test_one_control_connection_for_many_files(server, tmp_path):
    src = str(tmp_path / "x")
    write_file(src, 200000)
    cfg = server.write_config(str(tmp_path))
    mark = len(server.protocol_log())
    args = ["mkdirs", "many"]
    for i in range(25):
        args += ["--", "put", src, f"many/f{i}.part", "--", "stat",
                 f"many/f{i}.part", "--", "rename", f"many/f{i}.part",
                 f"many/f{i}", "--", "mtime", f"many/f{i}", "1600000000"]
    rc, out, err = probe(cfg, *args)
    assert rc == 0, results(out)[-5:] + [err]
    log = server.protocol_log()[mark:]
    assert log.count("OK LOGIN") == 1, "the control connection was not kept"
    assert '"522 ' not in log
    for i in range(25):
        p = os.path.join(server.home, "many", f"f{i}")
        assert same_file(src, p)
        assert int(os.stat(p).st_mtime) == 1600000000


@pytest.mark.parametrize("server", ["plain", "explicit"], indirect=True)
def test_resume(server, tmp_path):
    full = str(tmp_path / "full")
    head = str(tmp_path / "head")
    write_file(full, 3 * 1024 * 1024 + 11, seed=5)
    with open(full, "rb") as f, open(head, "wb") as g:
        g.write(f.read(1234567))
    cfg = server.write_config(str(tmp_path))
    rc, out, _ = probe(cfg, "put", head, "r.bin", "--", "stat", "r.bin",
                       "--", "put", full, "r.bin", "1234567",
                       "--", "get", "r.bin", str(tmp_path / "back"))
    res = results(out)
    assert rc == 0, res
    assert "ok stat size=1234567" in res[2]
    assert same_file(full, os.path.join(server.home, "r.bin"))
    assert same_file(full, str(tmp_path / "back"))
    # The second put appended (APPE), it did not rewrite.
    assert "APPE" in server.protocol_log()
    # Progress of a resumed put counts from the offset.
    progress = [int(l.split()[1]) for l in out if l.startswith("progress ")]
    assert min(p for p in progress if p >= 1234567) >= 1234567


@pytest.mark.parametrize("server", ["plain", "explicit"], indirect=True)
def test_server_killed_mid_put_then_resume(server, tmp_path):
    size = 48 * 1024 * 1024
    src = str(tmp_path / "big")
    write_file(src, size, seed=9)
    cfg = server.write_config(str(tmp_path), extra={"stall_timeout": "20s"})
    p = subprocess.Popen([PROBE, cfg, "nas", "put", src, "big.bin"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True,
                         env=dict(os.environ, FTP_PROBE_RATE=str(8 << 20)))
    # Wait until a few MiB are on their way, then kill the server.
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 4 * 1024 * 1024 and time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith("progress "):
            seen = int(line.split()[1])
    assert seen >= 4 * 1024 * 1024, "no progress before the kill"
    server.kill()
    t0 = time.monotonic()
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("the put hangs after the server died")
    elapsed = time.monotonic() - t0
    no_sanitizer_report(err)
    assert error_of(out.splitlines(), "put"), results(out.splitlines()) + [err]
    code, msg = error_of(out.splitlines(), "put")
    assert code in TRANSIENT, (code, msg)
    assert elapsed < 10, f"took {elapsed:.1f}s to notice"
    assert p.returncode == 1

    # Back on the same port: resume from what the server has.
    server.start()
    rc, out, _ = probe(cfg, "stat", "big.bin")
    m = re.match(r"ok stat size=(\d+)", results(out)[1])
    assert m, out
    have = int(m.group(1))
    assert 0 < have < size
    rc, out, err = probe(cfg, "put", src, "big.bin", str(have))
    assert rc == 0, results(out) + [err]
    assert same_file(src, os.path.join(server.home, "big.bin"))


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_next_operation_after_a_dead_connection_reconnects(server, tmp_path):
    src = str(tmp_path / "x")
    write_file(src, 1000)
    cfg = server.write_config(str(tmp_path))
    # connect, then the server restarts while the connection idles.
    p = subprocess.Popen([PROBE, cfg, "nas", "put", src, "a", "--", "sleep",
                          "1500", "--", "put", src, "b", "--", "stat", "b"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(0.8)
    server.kill()
    server.start()
    out, err = p.communicate(timeout=60)
    no_sanitizer_report(err)
    res = results(out.splitlines())
    assert res[1] == "ok put 1000", res
    # The kept-alive connection died with the server; the next operation
    # logs in again on its own.
    assert res[3] == "ok put 1000", res
    assert res[4].startswith("ok stat size=1000"), res


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_stalled_server_is_detected(server, tmp_path):
    size = 64 * 1024 * 1024
    src = str(tmp_path / "big")
    write_file(src, size)
    cfg = server.write_config(str(tmp_path), extra={"stall_timeout": "2s"})
    p = subprocess.Popen([PROBE, cfg, "nas", "put", src, "s.bin"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True,
                         env=dict(os.environ, FTP_PROBE_RATE=str(4 << 20)))
    while True:
        line = p.stdout.readline()
        if not line or (line.startswith("progress ")
                        and int(line.split()[1]) > 1 << 20):
            break
    server.freeze()               # mute, with every socket still open
    try:
        t0 = time.monotonic()
        out, err = p.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        server.thaw()
    no_sanitizer_report(err)
    code, msg = error_of(out.splitlines(), "put")
    assert code in ("stall", "timeout"), (code, msg)
    assert elapsed < 15


@pytest.mark.parametrize("server", ["plain", "implicit"], indirect=True)
def test_missing_root(server, tmp_path):
    cfg = server.write_config(str(tmp_path), path="not/there")
    rc, out, _ = probe(cfg, "connect")
    code, msg = error_of(out, "connect")
    assert code == "noroot", out
    assert "not/there" in msg


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_root_below_login_dir_and_absolute(server, tmp_path):
    for d in ("photos", "photos/2026"):
        os.mkdir(os.path.join(server.home, d))
        os.chown(os.path.join(server.home, d), server.uid, server.gid)
    src = str(tmp_path / "x")
    write_file(src, 5000)
    cfg = server.write_config(str(tmp_path), path="photos/2026")
    rc, out, _ = probe(cfg, "put", src, "a.jpg")
    assert rc == 0, out
    assert same_file(src, os.path.join(server.home, "photos/2026/a.jpg"))
    # ftp://host/%2Fabs/path is absolute.
    absroot = "%2F" + os.path.join(server.home, "photos").lstrip("/")
    cfg = server.write_config(str(tmp_path), path=absroot)
    rc, out, _ = probe(cfg, "put", src, "b.jpg")
    assert rc == 0, out
    assert same_file(src, os.path.join(server.home, "photos/b.jpg"))


@pytest.mark.parametrize("server", ["plain", "explicit"], indirect=True)
def test_active_mode(server, tmp_path):
    src = str(tmp_path / "x")
    write_file(src, 300000)
    cfg = server.write_config(str(tmp_path), extra={"active": "yes"})
    rc, out, err = probe(cfg, "put", src, "act.bin", "--", "get", "act.bin",
                         str(tmp_path / "back"))
    if server.mode != "plain" and rc == 1 and error_of(out, "connect"):
        # libcurl 7.87/7.88 cannot do active FTPS: refused, said plainly.
        code, msg = error_of(out, "connect")
        assert code == "config" and "passive" in msg, out
        return
    assert rc == 0, results(out) + [err]
    assert same_file(src, str(tmp_path / "back"))
    log = server.protocol_log()
    assert re.search(r'FTP command: .*"(EPRT|PORT) ', log)
    assert not re.search(r'FTP command: .*"(EPSV|PASV)', log)


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_permission_denied_is_permanent(server, tmp_path):
    ro = os.path.join(server.home, "ro")
    os.mkdir(ro, 0o555)       # owned by root: the FTP user cannot write
    src = str(tmp_path / "x")
    write_file(src, 10)
    cfg = server.write_config(str(tmp_path))
    rc, out, _ = probe(cfg, "put", src, "ro/x", "--", "mkdirs", "ro/sub")
    res = results(out)
    put = error_of(res, "put")
    mkd = error_of(res, "mkdirs")
    assert put and put[0] in ("permission", "name"), res  # vsftpd: 553
    assert "553" in put[1]
    assert mkd and mkd[0] == "permission" and "550" in mkd[1], res


# ---- what one upload costs ---------------------------------------------------

def ftp_commands(log):
    """The commands in a vsftpd protocol log (log_ftp_protocol=YES)."""
    return re.findall(r'FTP command: Client "[^"]*", "([^"]*)"', log)


@pytest.mark.parametrize("server", ["plain", "explicit"], indirect=True)
def test_upload_commands_per_file(server, sfs):
    """A file through the mount, on a kept-alive connection: STOR, the mtime
    command and one SIZE on the same curl perform (put_file), then
    RNFR/RNTO; no TYPE (the connection is binary already), no MDTM query,
    no second SIZE.  Before put_file it was EPSV, STOR, MDTM (set), TYPE I,
    SIZE, MDTM (query), RNFR, RNTO in four performs."""
    d = os.path.join(server.home, "d")
    pw = sfs.root / "nas.pass"
    pw.write_text(server.password + "\n")
    os.chmod(pw, 0o600)
    opts = {"user": server.user, "password_file": pw, "connections": 1,
            "stall_timeout": "10s", "connect_timeout": "10s"}
    if server.mode != "plain":
        opts.update(tls_mode=server.mode, tls_ca=server.cert)
    sfs.add_dest("nas", url=server.url(), **opts)
    # settle: the mtime is set before the upload starts (no meta job)
    sfs.set_spool(settle="300ms")
    sfs.mount(env=child_env())
    # The first file logs in and makes d/; the second is the one counted.
    sfs.m("nas", "d").mkdir()
    warm = sfs.m("nas", "d/warm.txt")
    warm.write_bytes(b"warm\n")
    sfs.wait_uploaded(warm, timeout=30)
    mark = len(server.protocol_log())
    data = os.urandom(5000)
    when = 1500000000
    p = sfs.m("nas", "d/photo.jpg")
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, (when, when))
    sfs.wait_uploaded(p, timeout=30)
    log = server.protocol_log()[mark:]
    cmds = ftp_commands(log)
    verbs = [c.split()[0] for c in cmds]
    assert verbs == ["EPSV", "STOR", "MDTM", "SIZE", "RNFR", "RNTO"], cmds
    tmp = cmds[1].split(" ", 1)[1]
    assert tmp.startswith(d + "/") and tmp.endswith(".part"), cmds
    # vsftpd sets times with "MDTM YYYYMMDDhhmmss path"; no MDTM asks one.
    assert cmds[2] == "MDTM 20170714024000 " + tmp, cmds
    assert cmds[3] == "SIZE " + tmp, cmds
    assert cmds[4:] == ["RNFR " + tmp, "RNTO " + os.path.join(d, "photo.jpg")]
    assert re.search(r'FTP response: Client "[^"]*", "213 5000"', log), log
    # What arrived: the content and the mtime.
    got = os.path.join(d, "photo.jpg")
    with open(got, "rb") as f:
        assert f.read() == data
    assert int(os.stat(got).st_mtime) == when
    assert sorted(os.listdir(d)) == ["photo.jpg", "warm.txt"]
