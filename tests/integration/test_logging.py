"""A daemonized spoolfs (no -f) logs to syslog: one line per upload result,
facility daemon, never a password.

Hermetic: the daemon runs in its own mount namespace (unshare -m) in which
/dev is an overlay whose /dev/log points at a datagram socket this test
owns.  Nothing outside the namespace sees the socket, the overlay or the
FUSE mount, and the machine's own syslog (if any) gets nothing.
"""

import os
import re
import shutil
import socket
import subprocess
import textwrap
import time

import pytest

from spoolfs_harness import fuse_unavailable_reason, scaled, spoolfs_bin

SECRET = "s3cret-Pa55word"
LOG_DAEMON = 3 << 3


def _skip_unless_possible():
    reason = fuse_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    for tool in ("unshare", "getfattr", "fusermount3"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")


def _run_in_namespace(script: str, timeout: float):
    return subprocess.run(["unshare", "--mount", "--propagation", "private",
                           "sh", "-euc", script],
                          capture_output=True, text=True, timeout=timeout)


def _overlay_dev(tmp_path, sock) -> str:
    up, work = tmp_path / "dev-up", tmp_path / "dev-work"
    up.mkdir()
    work.mkdir()
    return (f"mount -t overlay overlay -o lowerdir=/dev,upperdir={up},"
            f"workdir={work} /dev\nln -sfn {sock} /dev/log\n")


def _receive(sock, until, timeout):
    """Datagrams until one matches UNTIL or TIMEOUT passes."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            lines.append(sock.recv(65536).decode(errors="replace"))
        except socket.timeout:
            break
        if re.search(until, lines[-1]):
            break
    return lines


def _daemon_pids(lines):
    return {int(m.group(1)) for line in lines
            for m in [re.search(r"spoolfs\[(\d+)\]:", line)] if m}


def _stop_leftover(pids):
    """Kill a daemon of ours that outlived its namespace script."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(spoolfs_bin()).encode() not in f.read():
                    continue
            os.kill(pid, 9)
        except (FileNotFoundError, ProcessLookupError):
            pass


def test_daemon_logs_to_syslog(tmp_path):
    _skip_unless_possible()
    sock_path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))

    # the overlay itself is the only thing that may not work here
    probe = _run_in_namespace(_overlay_dev(tmp_path, sock_path)
                              + "logger -t spoolfs-probe probe", 20)
    if probe.returncode != 0:
        pytest.skip("cannot overlay /dev in a mount namespace: "
                    + probe.stderr.strip())
    assert _receive(sock, "probe", 5), "logger's line did not arrive"
    shutil.rmtree(tmp_path / "dev-up")
    shutil.rmtree(tmp_path / "dev-work")

    spool, remote, mnt = (tmp_path / n for n in ("spool", "remote", "mnt"))
    remote.mkdir()
    mnt.mkdir()
    conf = tmp_path / "spoolfs.conf"
    conf.write_text(textwrap.dedent(f"""\
        [spool]
        dir = {spool}
        settle = 50ms

        [dest local]
        url = file://{remote}

        [dest ftp]
        url = ftp://127.0.0.1:1/x
        user = someone
        password = {SECRET}
        retries = 0

        [dest insecure]
        url = ftps://127.0.0.1:1/x
        tls_verify = no
        """))
    conf.chmod(0o600)
    wait_for = "\n".join(f"""\
        i=0
        until [ "$(getfattr --only-values -n user.spoolfs.state {f} \
                    2>/dev/null || true)" = {state} ]; do
            i=$((i + 1)); [ $i -lt {int(scaled(300))} ] || exit 3
            sleep 0.1
        done""" for f, state in ((mnt / "local/a.txt", "uploaded"),
                                 (mnt / "ftp/.failed/b.txt", "failed")))
    script = _overlay_dev(tmp_path, sock_path) + textwrap.dedent(f"""\
        {spoolfs_bin()} {conf} {mnt}
        echo hello > {mnt}/local/a.txt
        echo hello > {mnt}/ftp/b.txt
        """) + textwrap.dedent(wait_for) + f"\nfusermount3 -u {mnt}\n"

    r = None
    lines = []
    try:
        r = _run_in_namespace(script, scaled(90))
        lines = _receive(sock, "unmounting", scaled(10))
    finally:
        lines += _receive(sock, "^$", 0.2)
        _stop_leftover(_daemon_pids(lines))
        sock.close()

    log = "\n".join(lines)
    assert lines, f"nothing reached syslog; spoolfs said: {r.stderr}"
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr}\nsyslog:\n{log}"
    # nothing after the mount reaches the terminal of a daemonized spoolfs
    assert "uploaded" not in r.stderr + r.stdout, r.stderr
    assert len(_daemon_pids(lines)) == 1, log

    def find(pattern):
        hits = [line for line in lines if re.search(pattern, line)]
        assert hits, f"no syslog line matches {pattern!r}:\n{log}"
        return hits

    mounted = find(r"spoolfs\[\d+\]: mounted ")[0]
    up = find(r"spoolfs\[\d+\]: local: uploaded 'a\.txt' to file://")
    failed = find(r"spoolfs\[\d+\]: ftp: upload of 'b\.txt' .*failed: .*"
                  r"kept in ftp/\.failed/b\.txt")
    find(r"spoolfs\[\d+\]: unmounting")
    # said on the terminal at mount, and again where a boot mount's
    # messages go
    insecure = find(r"spoolfs\[\d+\]: insecure: tls_verify = no: the "
                    r"server's certificate is NOT checked")
    assert insecure[0].startswith(f"<{LOG_DAEMON | 4}>"), insecure[0]
    assert "insecure: tls_verify = no" in r.stderr
    assert len(up) == 1 and len(failed) == 1, log     # one line per result
    # <PRI> = facility daemon | severity: info for a success, err for a failure
    assert mounted.startswith(f"<{LOG_DAEMON | 6}>"), mounted
    assert up[0].startswith(f"<{LOG_DAEMON | 6}>"), up[0]
    assert failed[0].startswith(f"<{LOG_DAEMON | 3}>"), failed[0]
    assert SECRET not in log
