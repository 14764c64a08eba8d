"""Status and control against the real mount: MOUNT/.status and
.status.json, the user.spoolfs.* xattrs, `spoolfs status` (mounted,
stopped, killed; --json; --watch under a pty and into a pipe), `spoolfs
retry` (through the mount and with nothing mounted), `spoolfs log`, and no
password on any of those surfaces.

The JSON is validated against docs/status-schema.json (python3-jsonschema,
scripts/install-deps --test); counts are checked against the journal,
read with sqlite3 read-only."""

import errno
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from spoolfs_harness import (REPO, WaitTimeout, pseudo_random, run, scaled,
                             spoolfs_bin, wait_until)

try:
    import jsonschema
except ImportError:  # pragma: no cover - install-deps --test installs it
    jsonschema = None

SCHEMA = json.loads((REPO / "docs/status-schema.json").read_text())
BUCKETS = ("pending", "uploading", "uploaded", "failed")
ALLXATTRS = ("state", "attempts", "error", "remote", "progress", "next_retry")


def validate(doc):
    if jsonschema is None:
        pytest.fail("python3-jsonschema missing (scripts/install-deps --test)")
    jsonschema.validate(doc, SCHEMA)
    return doc


def cli(sfs, *args, check=True, timeout=60):
    return run([spoolfs_bin(), *args[:1], str(sfs.cfg_path), *args[1:]],
               check=check, timeout=timeout)


def status_json(sfs):
    return validate(json.loads(cli(sfs, "status", "--json").stdout))


def mount_json(sfs):
    with open(sfs.mnt / ".status.json") as f:
        return validate(json.load(f))


def dest_of(doc, name):
    return next(d for d in doc["destinations"] if d["name"] == name)


def journal_counts(sfs):
    """{dest: {bucket: (files, bytes)}} straight from the journal."""
    db = sqlite3.connect(f"file:{sfs.spool / 'journal.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT dest, area, state, size FROM nodes "
                          "WHERE is_dir = 0 AND area != 2").fetchall()
    finally:
        db.close()
    out = {}
    for dest, area, state, size in rows:
        b = ("failed" if area == 1 or state == 4 else "uploaded" if state == 3
             else "uploading" if state == 2 else "pending")
        f, n = out.setdefault(dest, {}).get(b, (0, 0))
        out[dest][b] = (f + 1, n + size)
    return out


def counts(doc, name):
    d = dest_of(doc, name)
    return {b: (d[b]["files"], d[b]["bytes"]) for b in BUCKETS
            if d[b]["files"]}


def wait_failed(sfs, dest, rel, timeout=30.0):
    return wait_until(lambda: rel in sfs.failed(dest), timeout,
                      f"{dest}/.failed/{rel}",
                      state=lambda: sfs.describe([sfs.m(dest, rel)]))


# ------------------------------------------------------------------ files

def test_status_files_are_read_only_dotfiles_in_the_root(sfs):
    sfs.add_dest("alpha")
    sfs.add_dest("beta")
    sfs.mount()
    names = sorted(os.listdir(sfs.mnt))
    assert names == [".status", ".status.json", "alpha", "beta"]
    for n in (".status", ".status.json"):
        p = sfs.mnt / n
        st = p.stat()
        assert st.st_mode & 0o777 == 0o444 and not (sfs.mnt / n).is_dir()
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
            with pytest.raises(OSError) as e:
                os.open(p, flags)
            assert e.value.errno == errno.EACCES
        with pytest.raises(OSError) as e:
            os.unlink(p)
        assert e.value.errno == errno.EACCES
        with pytest.raises(OSError) as e:
            os.rename(p, sfs.mnt / "alpha" / "x")
        assert e.value.errno == errno.EACCES
        assert os.listxattr(p) == []
    # the root says which spool it serves: how the CLI finds its mount
    assert os.getxattr(sfs.mnt, "user.spoolfs.spool").decode() == str(sfs.spool)

    # every way of reading sees one whole document
    text = run(["cat", sfs.mnt / ".status"]).stdout
    assert text.startswith("spoolfs status at ")
    assert re.search(r"^alpha  file://", text, re.M)
    assert all(len(line) <= 80 for line in text.splitlines())
    less = run(["less", "-F", "-X", sfs.mnt / ".status"],
               env={**os.environ, "TERM": "dumb"}).stdout
    assert "alpha  file://" in less
    with open(sfs.mnt / ".status.json") as f:
        doc = validate(json.load(f))
    assert [d["name"] for d in doc["destinations"]] == ["alpha", "beta"]
    assert doc["source"] == "daemon" and doc["daemon"]["pid"] == sfs.daemon.pid
    with open(sfs.mnt / ".status.json", "rb") as f:
        # one tiny read at a time: the snapshot taken at open() holds
        small = b"".join(iter(lambda: f.read(7), b""))
    validate(json.loads(small))
    jq = run(["sh", "-c", f"jq -r '.destinations[].name' < "
              f"'{sfs.mnt}/.status.json'"])
    assert jq.stdout.split() == ["alpha", "beta"]
    # the open descriptor knows its snapshot's size
    with open(sfs.mnt / ".status.json", "rb") as f:
        data = f.read()
        assert os.fstat(f.fileno()).st_size in (0, len(data))


def test_counts_match_the_journal_mounted_and_stopped(sfs):
    sfs.set_spool(max_size="64M")
    sfs.add_dest("good")
    sfs.add_dest("bad", url="file://" + str(sfs.root / "missing"), retries=0)
    sfs.allow_log(r"bad: upload of")
    sfs.mount()
    sizes = {"a.bin": 1000, "sub/b.bin": 70000, "sub/deeper/c.bin": 3}
    for rel, n in sizes.items():
        p = sfs.m("good", rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(pseudo_random(n, seed=n))
    sfs.m("bad", "lost.txt").write_bytes(b"12345")
    sfs.wait_uploaded(*(sfs.m("good", r) for r in sizes))
    wait_failed(sfs, "bad", "lost.txt")

    doc = mount_json(sfs)
    assert counts(doc, "good") == {"uploaded": (3, 71003)}
    assert counts(doc, "bad") == {"failed": (1, 5)}
    j = journal_counts(sfs)
    assert counts(doc, "good") == j["good"] and counts(doc, "bad") == j["bad"]
    assert doc["spool"]["max_bytes"] == 64 << 20
    assert doc["spool"]["used_bytes"] == 5      # only the failed file's
    good, bad = dest_of(doc, "good"), dest_of(doc, "bad")
    assert good["health"]["last_success_ms"] and not good["health"]["last_error"]
    assert bad["health"]["last_error"].startswith("bad: upload of 'lost.txt'")
    assert bad["url"] == "file://" + str(sfs.root / "missing")

    # the CLI, mounted: the daemon's own document
    live = status_json(sfs)
    assert live["source"] == "daemon"
    assert counts(live, "good") == counts(doc, "good")
    text = cli(sfs, "status").stdout
    assert re.search(r"^  uploaded +3 files +69\.3 KiB$", text, re.M), text
    assert re.search(r"^  failed +1 file +5 B$", text, re.M), text

    sfs.unmount()
    before = {p.name: p.stat().st_mtime_ns for p in sfs.spool.iterdir()}
    off = status_json(sfs)
    assert off["source"] == "journal" and off["daemon"]["running"] is False
    assert counts(off, "good") == counts(doc, "good")
    assert counts(off, "bad") == counts(doc, "bad")
    assert off["spool"]["used_bytes"] == 5
    assert dest_of(off, "good")["health"]["last_success_ms"] == \
        good["health"]["last_success_ms"]
    assert dest_of(off, "bad")["health"]["last_error"] == \
        bad["health"]["last_error"]
    text = cli(sfs, "status").stdout
    assert "from the journal (daemon not running)" in text
    assert re.search(r"^  uploaded +3 files +69\.3 KiB$", text, re.M), text
    # read-only: nothing in the spool changed, no -wal/-shm left behind
    after = {p.name: p.stat().st_mtime_ns for p in sfs.spool.iterdir()}
    assert after == before


def test_status_after_kill9_reads_the_journal(sfs):
    sfs.add_dest("local", max_rate="256K")
    sfs.mount()
    sfs.m("local", "slow.bin").write_bytes(pseudo_random(4 << 20))
    sfs.wait_state(sfs.m("local", "slow.bin"), "uploading")
    sfs.kill9()
    r = cli(sfs, "status", "--json", timeout=30)
    doc = validate(json.loads(r.stdout))
    assert doc["source"] == "journal" and not doc["daemon"]["running"]
    # interrupted: queued again at the next mount, so pending now
    assert counts(doc, "local") == {"pending": (1, 4 << 20)}
    assert doc["spool"]["used_bytes"] == 4 << 20
    sfs.cleanup_dead_mount()
    sfs.remount()
    sfs.wait_uploaded(sfs.m("local", "slow.bin"), timeout=90)


# ------------------------------------------------------------------ xattrs

def getfattr(path):
    out = run(["getfattr", "-d", "-m", "-", path]).stdout
    return dict(re.findall(r'^user\.spoolfs\.(\w+)="(.*)"$', out, re.M))


def test_xattrs_are_listed_and_right(sfs):
    dest = sfs.add_dest("local")
    sfs.add_dest("bad", url="file://" + str(sfs.root / "missing"), retries=1)
    sfs.allow_log(r"bad: upload of")
    sfs.mount()
    p = sfs.m("local", "dir/f.txt")
    p.parent.mkdir()
    p.write_bytes(b"hello")
    sfs.wait_uploaded(p)
    x = getfattr(p)
    assert set(x) == set(ALLXATTRS)
    assert x["state"] == "uploaded" and x["attempts"] == "1"
    assert x["error"] == "" and x["next_retry"] == ""
    assert x["progress"] == "5"
    assert x["remote"] == f"file://{dest}/dir/f.txt"

    q = sfs.m("bad", "g.txt")
    q.write_bytes(b"xyz")
    wait_failed(sfs, "bad", "g.txt")
    x = getfattr(sfs.m("bad", ".failed/g.txt"))
    assert set(x) == set(ALLXATTRS) - {"remote"}     # never on a server
    assert x["state"] == "failed" and x["attempts"] == "2"
    assert x["error"].startswith("bad: upload of 'g.txt' to file://")
    assert x["next_retry"] == ""


# ------------------------------------------------------------------ retry

def test_retry_requeues_through_the_mount(sfs):
    target = sfs.root / "later"
    sfs.add_dest("box", url="file://" + str(target), retries=0)
    sfs.allow_log(r"box: upload of")
    sfs.mount()
    for rel in ("a.txt", "sub/b.txt", "sub/c.txt"):
        p = sfs.m("box", rel)
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(rel.encode())
    for rel in ("a.txt", "sub/b.txt", "sub/c.txt"):
        wait_failed(sfs, "box", rel)
    assert dest_of(mount_json(sfs), "box")["failed"]["files"] == 3

    target.mkdir()
    r = cli(sfs, "retry", "box/sub/b.txt")
    assert "requeued 1 failed file" in r.stdout
    sfs.wait_uploaded(sfs.m("box", "sub/b.txt"))
    assert sfs.xattr(sfs.m("box", "sub/b.txt"), "attempts") == "1"
    assert sfs.failed("box") == ["a.txt", "sub/c.txt"]

    r = cli(sfs, "retry")
    assert "box: requeued 2 files" in r.stdout
    assert "requeued 2 failed files; uploading now" in r.stdout
    sfs.wait_uploaded(sfs.m("box", "a.txt"), sfs.m("box", "sub/c.txt"))
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")
                  if p.is_file()) == ["a.txt", "sub/b.txt", "sub/c.txt"]
    assert sfs.failed("box") == []
    assert "requeued 0 failed files" in cli(sfs, "retry").stdout
    r = cli(sfs, "retry", "nope", check=False)
    assert r.returncode == 1 and "no destination 'nope'" in r.stderr


def test_retry_with_nothing_mounted_edits_the_spool(sfs):
    target = sfs.root / "later"
    sfs.add_dest("box", url="file://" + str(target), retries=0)
    sfs.allow_log(r"box: upload of")
    sfs.mount()
    sfs.m("box", "d").mkdir()
    sfs.m("box", "d/x.bin").write_bytes(b"x" * 100)
    wait_failed(sfs, "box", "d/x.bin")
    sfs.unmount()
    assert counts(status_json(sfs), "box") == {"failed": (1, 100)}

    r = cli(sfs, "retry", "box/.failed/d")
    assert "requeued 1 failed file; spoolfs is not mounted" in r.stdout
    assert counts(status_json(sfs), "box") == {"pending": (1, 100)}
    target.mkdir()
    sfs.mount()
    sfs.wait_uploaded(sfs.m("box", "d/x.bin"))
    assert (target / "d/x.bin").read_bytes() == b"x" * 100


# ------------------------------------------------------------------ log

def test_log_shows_each_attempt_and_the_end(sfs):
    target = sfs.root / "later"
    sfs.add_dest("box", url="file://" + str(target), retries=20,
                 backoff="300ms..300ms")
    sfs.mount()
    p = sfs.m("box", "photos/DSC_0042.NEF")
    p.parent.mkdir()
    p.write_bytes(pseudo_random(5000))
    wait_until(lambda: int(sfs.xattr(p, "attempts")) >= 2, 30,
               "two failed attempts", state=lambda: sfs.describe([p]))
    doc = mount_json(sfs)
    h = dest_of(doc, "box")["health"]
    assert h["last_error"].startswith("box: upload of 'photos/DSC_0042.NEF'")
    target.mkdir()
    sfs.wait_uploaded(p)

    out = cli(sfs, "log", "box/photos/DSC_0042.NEF").stdout
    lines = out.splitlines()
    assert lines[0] == "box/photos/DSC_0042.NEF"
    retries = [ln for ln in lines if re.match(r"\S+ \S+  retry ", ln)]
    assert len(retries) >= 1, out
    assert all("will retry" in ln for ln in retries)
    assert re.search(r"  uploaded  uploaded to file://.*/photos/DSC_0042.NEF$",
                     out, re.M), out
    assert re.search(r"^now: uploaded, 4\.88 KiB, attempts \d+, remote file://",
                     out, re.M), out
    recent = cli(sfs, "log").stdout
    assert "box/photos/DSC_0042.NEF: uploaded to file://" in recent
    r = cli(sfs, "log", "box/no/such", check=False)
    assert r.returncode == 1 and "no file 'box/no/such'" in r.stderr


def test_log_keeps_a_name_with_a_newline_on_one_line(sfs):
    """A file name cannot forge a line of `spoolfs log` (nor of the daemon
    log): its control characters are shown as \\xNN."""
    name = "evil\n2026-01-01 00:00:00  uploaded  forged"
    sfs.add_dest("box", create=False, retries=0)
    sfs.allow_log(r"box: upload of 'evil\\x0a2026")
    sfs.mount()
    sfs.m("box", name).write_bytes(b"x")
    f = sfs.m("box", ".failed/" + name)
    wait_until(f.exists, 20, f"{f} to appear", state=lambda: sfs.describe())
    assert "\n" not in sfs.xattr(f, "error")
    out = cli(sfs, "log").stdout
    assert "box/evil\\x0a2026-01-01 00:00:00  uploaded  forged: " in out, out
    assert not re.search(r"^2026-01-01 00:00:00  uploaded", out, re.M), out
    out = cli(sfs, "log", "box/.failed/" + name, check=False)
    assert not re.search(r"^2026-01-01 00:00:00  uploaded", out.stdout,
                         re.M), out.stdout
    assert not re.search(r"^2026-01-01 00:00:00  uploaded", sfs.log(), re.M)


# ------------------------------------------------------------------ watch

BAR = re.compile(r"\[(#*)(\.*)\] +(\d+)%  \S+ \S+/\S+ \S+  "
                 r"(\S+ \S+/s|-)  ETA \S+")


def read_until(fd, pred, timeout, proc):
    buf = b""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            if pred(buf):
                return buf
        elif proc.poll() is not None:
            break
    raise WaitTimeout(f"watch output never matched; got:\n{buf[-3000:]!r}")


def partial_bar(buf):
    text = buf.decode(errors="replace")
    return any(0 < int(m.group(3)) < 100 and len(m.group(1)) < 20
               for m in BAR.finditer(text))


def test_watch_draws_progress_bars_on_a_terminal(sfs):
    sfs.add_dest("slow", max_rate="1M")
    sfs.mount()
    p = sfs.m("slow", "big.bin")
    p.write_bytes(pseudo_random(10 << 20))
    sfs.wait_state(p, "uploading")

    master, slave = pty.openpty()
    proc = subprocess.Popen([str(spoolfs_bin()), "status", str(sfs.cfg_path),
                             "--watch", "--interval", "0.2"],
                            stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    try:
        buf = read_until(master, partial_bar, 30, proc)
        frames = buf.split(b"\033[H\033[2J")
        assert len(frames) >= 2, buf      # redrawn, not scrolled
        last = frames[-1].decode(errors="replace").replace("\r\n", "\n")
        assert all(len(ln) <= 80 for ln in last.splitlines()), last
        assert "> big.bin (attempt 1)" in last
        assert "\033[3" not in buf.decode(errors="replace")  # no colour
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=scaled(10)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    sfs.wait_uploaded(p, timeout=90)


def test_watch_into_a_pipe_prints_plain_snapshots(sfs):
    sfs.add_dest("slow", max_rate="1M")
    sfs.mount()
    p = sfs.m("slow", "big.bin")
    p.write_bytes(pseudo_random(6 << 20))
    sfs.wait_state(p, "uploading")
    proc = subprocess.Popen([str(spoolfs_bin()), "status", str(sfs.cfg_path),
                             "--watch", "-i", "0.2"], stdout=subprocess.PIPE)
    try:
        buf = read_until(proc.stdout.fileno(),
                         lambda b: b.count(b"spoolfs status at ") >= 3, 30,
                         proc)
        assert b"\033" not in buf
        assert BAR.search(buf.decode())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=scaled(10)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    doc = mount_json(sfs)
    ups = dest_of(doc, "slow")["uploads"]
    if ups:    # still in flight: live numbers
        u = ups[0]
        assert u["path"] == "big.bin" and u["size_bytes"] == 6 << 20
        assert 0 <= u["sent_bytes"] <= u["size_bytes"]
        assert u["progress_percent"] == pytest.approx(
            u["sent_bytes"] * 100 / u["size_bytes"], abs=0.06)
        # max_rate lets a 1 s burst through, so early averages run high
        assert u["rate_bps"] is None or u["rate_bps"] > 0
    sfs.wait_uploaded(p, timeout=90)


# ------------------------------------------------------------------ secrets

def test_no_password_on_any_surface(sfs):
    secret = "Sp00l-S3cret-pw"
    kh = sfs.root / "known_hosts"
    kh.write_text("")
    # nothing listens on port 1: every attempt fails, after the password
    # was read, with the URL in the message
    sfs.add_dest("locked", url="sftp://someone@127.0.0.1:1/upload",
                 password=secret, retries=1, known_hosts=kh)
    sfs.allow_log(r"locked: upload of")
    sfs.write_config()
    os.chmod(sfs.cfg_path, 0o600)
    sfs.mount(write_config=False)
    sfs.m("locked", "f.txt").write_bytes(b"data")
    wait_failed(sfs, "locked", "f.txt")
    surfaces = {
        ".status": (sfs.mnt / ".status").read_text(),
        ".status.json": (sfs.mnt / ".status.json").read_text(),
        "status": cli(sfs, "status").stdout,
        "status --json": cli(sfs, "status", "--json").stdout,
        "log": cli(sfs, "log").stdout,
        "log file": cli(sfs, "log", "locked/.failed/f.txt").stdout,
        "xattrs": run(["getfattr", "-d", "-m", "-",
                       sfs.m("locked", ".failed/f.txt")]).stdout,
        "daemon log": sfs.log(),
    }
    sfs.unmount()
    surfaces["status stopped"] = cli(sfs, "status", "--json").stdout
    surfaces["journal"] = (sfs.spool / "journal.db").read_bytes().decode(
        errors="replace")
    assert "locked: upload of 'f.txt'" in surfaces[".status"].replace("\n    ", " ")
    for what, text in surfaces.items():
        assert secret not in text, f"password in {what}"
