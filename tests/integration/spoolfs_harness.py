"""Harness for spoolfs mount tests: start the real binary on a temp mount,
wait for things with deadlines, compare trees byte for byte, and check the
daemon's log for unexpected warnings.

Everything here is protocol-neutral: the SFTP/FTP suites reuse SpoolfsEnv
with their own destination URLs (env.add_dest(name, url=..., **keys)).

Environment:
  SPOOLFS_BUILD                meson build dir (default <repo>/build); the
                               sftp/ftp suites take their helpers from it
  SPOOLFS_BIN                  binary to test (default $SPOOLFS_BUILD/spoolfs)
  SPOOLFS_TEST_TIMEOUT_SCALE   multiply every deadline (sanitizer builds: 3)
  SPOOLFS_REQUIRE_FUSE=1       fail instead of skip when /dev/fuse or the
                               binary is missing (CI sets it)
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("SPOOLFS_TEST_TIMEOUT_SCALE", "1") or "1")
XATTRS = ("state", "attempts", "error", "remote", "progress")
# a temp name on the server, as a regex: .spoolfs-TAG-ID-GEN.part (TAG:
# 8 hex digits, random per mount)
TEMP_RE = r"\.spoolfs-[0-9a-f]{8}-\d+-\d+\.part"

# Lines that fail a test whatever the allowlist says.
FATAL_LOG = re.compile(
    r"ERROR: \w*Sanitizer|runtime error:|^SUMMARY: \w*Sanitizer|"
    r"LeakSanitizer|Assertion .* failed|double free|stack smashing",
    re.M)
# Lines that fail a test unless the test allows them.
WARN_LOG = re.compile(r"^spoolfs: (warning|error):", re.M)
# libfuse 3.14 prints this in multithreaded mode; it is harmless.
BENIGN_LOG = [re.compile(r"Ignoring invalid max threads value")]


def build_dir() -> Path:
    """The meson build dir with the helper programs (tests/unit/...)."""
    return Path(os.environ.get("SPOOLFS_BUILD") or REPO / "build")


def spoolfs_bin() -> Path:
    return Path(os.environ.get("SPOOLFS_BIN") or build_dir() / "spoolfs")


def scaled(timeout: float) -> float:
    return timeout * SCALE


def fuse_unavailable_reason() -> str | None:
    """None when we can mount, else why not (for pytest.skip)."""
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return f"cannot open /dev/fuse ({e.strerror}); mount tests need root and FUSE"
    if not shutil.which("fusermount3"):
        return "fusermount3 not installed (apt-get install fuse3)"
    b = spoolfs_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        return (f"spoolfs binary not built at {b} "
                "(meson setup build && ninja -C build, or set SPOOLFS_BIN)")
    return None


# ---------------------------------------------------------------- waiting

class WaitTimeout(AssertionError):
    pass


class WaitAbort(AssertionError):
    """Raised by a wait_until predicate to fail at once (no more polling)."""


def wait_until(pred: Callable[[], object], timeout: float, what: str,
               state: Callable[[], str] | None = None,
               interval: float = 0.03):
    """Poll pred() every `interval` s until it returns something truthy
    (returned) or `timeout` (scaled) runs out: then fail with what was
    awaited, the last exception pred raised, and state()'s description."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except WaitAbort:
            raise
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {limit:.1f}s waiting for {what}"
            if last_exc is not None:
                msg += f"\nlast exception: {last_exc!r}"
            if state is not None:
                try:
                    msg += "\n" + state()
                except Exception as e:  # noqa: BLE001
                    msg += f"\n(could not describe state: {e!r})"
            raise WaitTimeout(msg)
        time.sleep(interval)


# ---------------------------------------------------------------- mounts

def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_entry(path: os.PathLike | str) -> tuple[str, str] | None:
    """(fstype, source) of the mount at exactly `path`, or None."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) < 5 or _unescape_mountinfo(fields[4]) != target:
                continue
            r = right.split()
            found = (r[0], r[1] if len(r) > 1 else "")  # last one wins
    return found


def is_mounted(path) -> bool:
    return mount_entry(path) is not None


def is_fuse_mounted(path) -> bool:
    e = mount_entry(path)
    return e is not None and e[0].startswith("fuse")


def fusermount_u(path, lazy=False) -> subprocess.CompletedProcess:
    args = ["fusermount3", "-uz" if lazy else "-u", str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def run(args, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
    """Run a real tool; on failure say what ran and what it printed."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run([str(a) for a in args], timeout=scaled(timeout), **kw)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {p.returncode}\n"
            f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


# ---------------------------------------------------------------- daemon

class Daemon:
    """One `spoolfs -f CONFIG MOUNTPOINT` process with its log file."""

    def __init__(self, argv: list[str], mnt: Path, log_path: Path,
                 env: dict | None = None):
        self.argv = argv
        self.mnt = mnt
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.killed = False
        self.exit_expected_nonzero = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout=15.0):
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, env=self.env)

        def up():
            if self.proc.poll() is not None:
                raise WaitAbort(
                    f"spoolfs exited with status {self.proc.returncode} "
                    f"before mounting {self.mnt}:\n{self.log()}")
            return is_fuse_mounted(self.mnt)

        try:
            wait_until(up, timeout, f"spoolfs to mount {self.mnt}",
                       state=lambda: "daemon log:\n" + self.log())
        except WaitTimeout:
            self.stop(timeout=2)
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILL the daemon we started (only that PID); the mount stays
        behind, dead, until fusermount3 -u."""
        assert self.alive(), "daemon is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.killed = True

    def stop(self, timeout=20.0) -> list[str]:
        """Unmount (fusermount3 -u, lazily if busy) and wait for the daemon
        to exit.  Returns problems (non-empty = something went wrong)."""
        problems = []
        if self.proc is None:
            return problems
        if is_mounted(self.mnt):
            # The kernel sends the RELEASE(DIR) of a just-closed descriptor
            # in the background and drops it if the mount goes first
            # (fuse_conn_destroy() aborts the connection): libfuse then
            # never frees that handle, and LeakSanitizer reports it (seen
            # once, after a test's last listdir).  statfs is never cached
            # and is queued behind those releases (while fewer than
            # max_background, 12, are in flight): once it is answered the
            # daemon has read them.
            if self.alive():
                try:
                    os.statvfs(self.mnt)
                except OSError:
                    pass
            r = fusermount_u(self.mnt)
            if r.returncode != 0:
                # Busy (an open fd somewhere) or dead: retry briefly, then lazy.
                deadline = time.monotonic() + 2
                while is_mounted(self.mnt) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    r = fusermount_u(self.mnt)
                if is_mounted(self.mnt):
                    if self.alive():
                        problems.append(
                            f"fusermount3 -u {self.mnt} failed: {r.stderr.strip()}"
                            " (used -uz)")
                    fusermount_u(self.mnt, lazy=True)
        if self.alive():
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                problems.append(
                    f"spoolfs (pid {self.proc.pid}) did not exit within "
                    f"{scaled(timeout):.0f}s of the unmount; killed")
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                self.killed = True
        rc = self.proc.returncode
        if not self.killed and rc != 0 and not self.exit_expected_nonzero:
            problems.append(f"spoolfs exited with status {rc} after unmount")
        return problems


# ---------------------------------------------------------------- files

def sha256(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tree(root, skip_top=(".pending", ".failed")) -> dict[str, tuple]:
    """relpath -> ("d",) | ("f", size, sha256, mtime_s, mode) for a tree.
    Top-level .pending/.failed (spoolfs's own) are skipped."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel_dir, d))] = ("d",)
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            st = os.lstat(p)
            rel = os.path.normpath(os.path.join(rel_dir, fn))
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("f", st.st_size, sha256(p), int(st.st_mtime),
                            stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def files_of(t: dict) -> dict:
    return {k: v for k, v in t.items() if v[0] == "f"}


def stray_names(root) -> list[str]:
    """Temp files spoolfs (or rsync) may leave behind."""
    bad = []
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            # spoolfs's ".spoolfs-*.part", rsync's ".name.XXXXXX"
            if fn.startswith(".spoolfs-") or \
                    re.match(r"^\..+\.[A-Za-z0-9]{6}$", fn):
                bad.append(os.path.relpath(os.path.join(dirpath, fn), root))
    return bad


def assert_same_files(src, dst, mtime=False, mode=False, allow_extra=()):
    """Every regular file under src is under dst with the same bytes (and
    mtime seconds / mode if asked); dst holds nothing else (no temp files,
    no extra files), apart from relpaths in allow_extra."""
    s, d = files_of(tree(src)), files_of(tree(dst))
    missing = sorted(set(s) - set(d))
    extra = sorted(set(d) - set(s) - set(allow_extra))
    differ = []
    for k in sorted(set(s) & set(d)):
        if s[k][1:3] != d[k][1:3]:
            differ.append(f"{k!r}: size/sha {s[k][1]}/{s[k][2][:12]} "
                          f"vs {d[k][1]}/{d[k][2][:12]}")
        elif mtime and s[k][3] != d[k][3]:
            differ.append(f"{k!r}: mtime {s[k][3]} vs {d[k][3]}")
        elif mode and s[k][4] != d[k][4]:
            differ.append(f"{k!r}: mode {oct(s[k][4])} vs {oct(d[k][4])}")
    stray = stray_names(dst)
    msg = []
    if missing:
        msg.append(f"{len(missing)} missing at {dst}: {missing[:10]}")
    if extra:
        msg.append(f"{len(extra)} unexpected at {dst}: {extra[:10]}")
    if differ:
        msg.append(f"{len(differ)} differ: {differ[:10]}")
    if stray:
        msg.append(f"temp files left at {dst}: {stray[:10]}")
    assert not msg, "\n".join(msg)


def write_file(path, data: bytes, mtime: int | None = None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def pseudo_random(n: int, seed: int = 0) -> bytes:
    """n bytes, cheap, different per seed and not repetitive within 1 MiB."""
    block = hashlib.shake_256(f"spoolfs-{seed}".encode()).digest(min(n, 1 << 20) or 1)
    if n <= len(block):
        return block[:n]
    reps = []
    for i in range(n // len(block) + 1):
        reps.append(i.to_bytes(8, "little") + block[8:])
    return b"".join(reps)[:n]


def make_big_file(path, size: int, seed: int = 1) -> str:
    """A size-byte file of random-looking data: one random 1 MiB block,
    each copy stamped with its index (no two blocks alike).  Returns sha256."""
    block = bytearray(os.urandom(1 << 20))
    h = hashlib.sha256()
    with open(path, "wb") as f:
        written = 0
        i = 0
        while written < size:
            block[0:8] = (i ^ (seed << 40)).to_bytes(8, "little")
            chunk = bytes(block[: min(len(block), size - written)])
            f.write(chunk)
            h.update(chunk)
            written += len(chunk)
            i += 1
    return h.hexdigest()


def rename_onto_held_names(env, dest: str, server_dir: Path):
    """Renames whose new name another file's uploaded copy still holds on
    the server, while DEST's only connection is busy with a third file (the
    caller sets connections=1 and a max_rate): keep the old version
    (cp new a.tmp; mv a a.old; mv a.tmp a) and swap two files.  Asserts the
    server ends with every version under its name and nothing else."""
    m = lambda rel: env.m(dest, rel)
    v = {n: pseudo_random(20_000 + i, 40 + i)
         for i, n in enumerate(["a", "x", "y"])}
    v["new"] = pseudo_random(1_000_000, 50)
    for n in ("a", "x", "y"):
        m(n).write_bytes(v[n])
    env.wait_uploaded(m("a"), m("x"), m("y"))
    m("a.tmp").write_bytes(v["new"])
    env.wait_state(m("a.tmp"), "uploading")
    os.rename(m("a"), m("a.old"))
    os.rename(m("a.tmp"), m("a"))
    os.rename(m("x"), m("t"))
    os.rename(m("y"), m("x"))
    os.rename(m("t"), m("y"))
    want = {"a": v["new"], "a.old": v["a"], "x": v["y"], "y": v["x"]}
    env.wait_uploaded(*(m(n) for n in want))
    on_server = {p.name: p.read_bytes() for p in Path(server_dir).iterdir()}
    assert sorted(on_server) == sorted(want), sorted(on_server)
    for n, data in want.items():
        assert on_server[n] == data, f"{n} on the server holds other bytes"
        assert m(n).read_bytes() == data, f"{n} in the mount"


def emptied_directories_go(env, dest: str, server_dir: Path):
    """A directory of uploaded files renamed in the mount (a photo
    importer's temp directory, a user's mv) leaves no directory under its
    old name on the server, nor its emptied subdirectories; one that still
    holds a file spoolfs did not write stays, with that file.  With
    delete_remote (the caller sets it), rm -r of an uploaded directory
    leaves nothing of it on the server."""
    m = lambda rel: env.m(dest, rel)
    srv = Path(server_dir)
    files = {"import.tmp/a.jpg": pseudo_random(10_000, 61),
             "import.tmp/sub/deeper/b.jpg": pseudo_random(20_000, 62),
             "shared/c.jpg": pseudo_random(5_000, 63)}
    for rel, data in files.items():
        os.makedirs(m(rel).parent, exist_ok=True)
        m(rel).write_bytes(data)
    env.wait_uploaded(*(m(rel) for rel in files))
    theirs = srv / "shared" / "theirs.txt"     # put there by someone else
    theirs.write_bytes(b"not written by spoolfs")
    os.rename(m("import.tmp"), m("2026"))
    os.rename(m("shared"), m("shared2"))
    moved = {rel.replace("import.tmp", "2026").replace("shared", "shared2"):
             data for rel, data in files.items()}
    env.wait_uploaded(*(m(rel) for rel in moved))

    def entries():
        return sorted(str(p.relative_to(srv)) for p in srv.rglob("*"))
    want = ["2026", "2026/a.jpg", "2026/sub", "2026/sub/deeper",
            "2026/sub/deeper/b.jpg", "shared", "shared/theirs.txt",
            "shared2", "shared2/c.jpg"]
    wait_until(lambda: entries() == want, 20,
               "import.tmp/ to go from the server once its files moved",
               state=lambda: f"server: {entries()}\n{env.log_tail()}")
    for rel, data in moved.items():
        assert (srv / rel).read_bytes() == data, rel
    assert theirs.read_bytes() == b"not written by spoolfs"
    assert "removed the directory 'import.tmp/sub/deeper' from the " \
        "server: its files moved away" in env.log(), env.log_tail()

    run(["rm", "-r", m("2026")])
    want = ["shared", "shared/theirs.txt", "shared2", "shared2/c.jpg"]
    wait_until(lambda: entries() == want, 20,
               "rm -r 2026 with delete_remote to leave nothing of it",
               state=lambda: f"server: {entries()}\n{env.log_tail()}")


def shuffle_names(env, dest: str, server_dir: Path, seed: int):
    """150 random steps on 20 uploaded files in DEST (the caller sets a few
    connections and a max_rate, so renames overtake uploads): swaps through
    a temporary name, renames onto new and existing names, rewrites,
    removals, with short pauses between some.  Then every file in the mount
    must be on the server with its bytes, and the mount must hold exactly
    what the steps left.  Files removed or replaced may leave copies behind
    on the server (rm only forgets locally), so extra server files are
    allowed."""
    import random
    rnd = random.Random(seed)
    m = lambda rel: env.m(dest, rel)
    names = [f"f{i:02d}" for i in range(20)]
    want = {}
    for i, n in enumerate(names):
        want[n] = pseudo_random(rnd.randint(1_000, 200_000), 100 + i)
        m(n).write_bytes(want[n])
    for step in range(150):
        if step == 40:
            env.wait_uploaded(*(m(n) for n in want))
        cur = sorted(want)
        op = rnd.random() if len(cur) >= 2 else 0.8
        if op < 0.5:
            a, b = rnd.sample(cur, 2)
            os.rename(m(a), m("tmp"))
            os.rename(m(b), m(a))
            os.rename(m("tmp"), m(b))
            want[a], want[b] = want[b], want[a]
        elif op < 0.75:
            a, b = rnd.choice(cur), rnd.choice(names + [f"g{step}"])
            os.rename(m(a), m(b))
            want[b] = want.pop(a)
        elif op < 0.85 or not cur:
            a = rnd.choice(names)
            want[a] = pseudo_random(rnd.randint(1_000, 100_000), 1000 + step)
            m(a).write_bytes(want[a])
        else:
            a = rnd.choice(cur)
            os.unlink(m(a))
            del want[a]
        if rnd.random() < 0.2:
            time.sleep(rnd.random() * 0.3)
    env.wait_uploaded(*(m(n) for n in want), timeout=120)
    # removals on the server (delete_remote, stale copies) run after the
    # uploads they free names for: wait until none is left to run
    env.wait_trash_empty()
    local = {p.name: p.read_bytes() for p in env.m(dest).iterdir()
             if not p.name.startswith(".")}
    assert sorted(local) == sorted(want)
    for n, data in want.items():
        assert local[n] == data, f"{n} in the mount holds other bytes"
        got = (Path(server_dir) / n).read_bytes()
        assert got == data, f"{n} on the server holds other bytes"


# ---------------------------------------------------------------- env

class SpoolfsEnv:
    """A spool dir, a mount point, destination dirs and a config, all under
    one temp dir; mount()/unmount()/kill9()/remount() drive the real daemon.

    Typical use:
        env.add_dest("local", retries=2)
        env.mount()
        (env.mnt / "local" / "a").write_bytes(b"x")
        env.wait_uploaded(env.mnt / "local" / "a")
    """

    def __init__(self, root: Path, nodeid: str = ""):
        self.root = Path(root)
        self.nodeid = nodeid
        self.spool = self.root / "spool"
        self.mnt = self.root / "mnt"
        self.destroot = self.root / "dest"
        self.src = self.root / "src"          # for test input trees
        self.cfg_path = self.root / "spoolfs.conf"
        for d in (self.mnt, self.destroot, self.src):
            d.mkdir(parents=True, exist_ok=True)
        self.spool_keys: dict[str, str] = {"dir": str(self.spool), "settle": "0"}
        self.dests: dict[str, dict[str, str]] = {}
        self.dest_dirs: dict[str, Path] = {}
        self.daemons: list[Daemon] = []
        self.allowed: list[re.Pattern] = []
        self.extra_mounts: list[Path] = []   # tmpfs / bind mounts to undo
        self.extra_config = ""

    # -- configuration
    def add_dest(self, name="local", url=None, create=True, **keys) -> Path | None:
        """Add [dest NAME]; with no url, a file:// dir under dest/ (created
        unless create=False).  Keys are written as given; defaults keep
        tests fast: retries=3, backoff=20ms..200ms."""
        d = None
        if url is None:
            d = self.destroot / name
            if create:
                d.mkdir(parents=True, exist_ok=True)
            url = "file://" + str(d)
            self.dest_dirs[name] = d
        opts = {"url": url, "retries": "3", "backoff": "20ms..200ms"}
        opts.update({k: str(v) for k, v in keys.items() if v is not None})
        self.dests[name] = opts
        return d

    def set_spool(self, **keys):
        self.spool_keys.update({k: str(v) for k, v in keys.items()})
        for k, v in keys.items():
            if v is None:
                self.spool_keys.pop(k, None)

    def config_text(self) -> str:
        lines = ["[spool]"] + [f"{k} = {v}" for k, v in self.spool_keys.items()]
        for name, opts in self.dests.items():
            lines += ["", f"[dest {name}]"] + [f"{k} = {v}" for k, v in opts.items()]
        return "\n".join(lines) + "\n" + self.extra_config

    def write_config(self) -> Path:
        self.cfg_path.write_text(self.config_text())
        return self.cfg_path

    def allow_log(self, *patterns: str):
        """Let daemon warning/error lines matching any pattern through."""
        self.allowed += [re.compile(p) for p in patterns]

    # -- paths
    def dest_dir(self, name="local") -> Path:
        return self.dest_dirs[name]

    def m(self, dest="local", rel="") -> Path:
        """Path inside the mount: MOUNT/DEST/rel."""
        return self.mnt / dest / rel if rel else self.mnt / dest

    def data_dir(self) -> Path:
        return self.spool / "data"

    # -- daemon
    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    def mount(self, *args: str, write_config=True, config=True,
              env: dict | None = None, timeout=15.0) -> Daemon:
        if write_config and config:
            self.write_config()
        argv = [str(spoolfs_bin()), "-f", *args]
        if config:
            argv.append(str(self.cfg_path))
        argv.append(str(self.mnt))
        n = len(self.daemons) + 1
        d = Daemon(argv, self.mnt, self.root / f"daemon-{n}.log", env=env)
        self.daemons.append(d)
        d.start(timeout=timeout)
        return d

    def unmount(self, timeout=20.0):
        """Clean unmount; fails if fusermount3 or the daemon's exit was bad."""
        problems = self.daemon.stop(timeout=timeout)
        assert not problems, "\n".join(problems) + "\n" + self.log_tail()

    def kill9(self):
        self.daemon.kill9()

    def cleanup_dead_mount(self):
        """After kill9: fusermount3 -u the dead mount (lazily if needed)."""
        if is_mounted(self.mnt):
            r = fusermount_u(self.mnt)
            if r.returncode != 0 or is_mounted(self.mnt):
                fusermount_u(self.mnt, lazy=True)
        assert not is_mounted(self.mnt), f"{self.mnt} still mounted"

    def remount(self, *args, **kw) -> Daemon:
        if self.daemons and self.daemons[-1].killed:
            self.cleanup_dead_mount()
        elif self.daemons and self.daemons[-1].alive():
            self.unmount()
        return self.mount(*args, **kw)

    def mount_tmpfs(self, path: Path, size: str) -> Path:
        """A small tmpfs (root only), unmounted at teardown."""
        path.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path])
        self.extra_mounts.append(path)
        return path

    def make_read_only(self, path: Path) -> Path:
        """Bind-mount path read-only onto itself (writes get EROFS)."""
        run(["mount", "--bind", path, path])
        self.extra_mounts.append(path)
        run(["mount", "-o", "remount,bind,ro", path])
        return path

    # -- logs
    def log(self) -> str:
        return "".join(d.log() for d in self.daemons)

    def log_tail(self, n=40) -> str:
        lines = self.log().splitlines()
        return "daemon log (last %d lines):\n  " % min(n, len(lines)) + \
            "\n  ".join(lines[-n:])

    def uploaded_lines(self, dest=None) -> list[tuple[str, str]]:
        """(dest, relpath) for each "spoolfs: DEST: uploaded 'rel'" line,
        in log order."""
        out = []
        for m in re.finditer(r"^spoolfs: ([^:\s]+): uploaded '(.*?)'(?: |$)",
                             self.log(), re.M):
            if dest is None or m.group(1) == dest:
                out.append((m.group(1), m.group(2)))
        return out

    def unexpected_log_lines(self) -> list[str]:
        bad = []
        for line in self.log().splitlines():
            if FATAL_LOG.search(line):
                bad.append(line)
            elif WARN_LOG.search(line) and not any(
                    p.search(line) for p in self.allowed + BENIGN_LOG):
                bad.append(line)
        return bad

    # -- state
    @staticmethod
    def xattr(path, name: str) -> str:
        return os.getxattr(str(path), "user.spoolfs." + name).decode(
            errors="replace")

    @classmethod
    def xattrs(cls, path) -> dict[str, str]:
        out = {}
        for n in XATTRS:
            try:
                out[n] = cls.xattr(path, n)
            except OSError as e:
                out[n] = f"<{errno.errorcode.get(e.errno, e.errno)}>"
        return out

    @classmethod
    def state(cls, path) -> str:
        try:
            return cls.xattr(path, "state")
        except FileNotFoundError:
            return "<absent>"
        except OSError as e:
            return f"<{errno.errorcode.get(e.errno, e.errno)}>"

    def describe(self, paths: Iterable = (), limit=8) -> str:
        lines = []
        for p in list(paths)[:limit]:
            lines.append(f"{p}: {self.xattrs(p)}")
        for d in self.dest_dirs.values():
            try:
                names = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
            except OSError:
                names = ["<unreadable>"]
            lines.append(f"destination {d}: {len(names)} entries {names[:15]}")
        try:
            data = sorted(os.listdir(self.data_dir()))
            lines.append(f"spool data/: {len(data)} files {data[:10]}")
        except OSError:
            pass
        lines.append(self.log_tail())
        return "\n".join(lines)

    def wait_state(self, path, want: str | tuple, timeout=20.0) -> str:
        want_t = (want,) if isinstance(want, str) else tuple(want)
        return wait_until(
            lambda: (s := self.state(path)) in want_t and s,
            timeout, f"{path} to be in state {'|'.join(want_t)}",
            state=lambda: self.describe([path]))

    def wait_uploaded(self, *paths, timeout=60.0, files_under=None):
        """Wait until every path (and every regular file under files_under)
        has user.spoolfs.state = uploaded; a failed one fails at once."""
        todo = [Path(p) for p in paths]
        if files_under is not None:
            for dirpath, dirnames, filenames in os.walk(files_under):
                if Path(dirpath).parent == self.mnt:  # a destination root
                    dirnames[:] = [d for d in dirnames
                                   if d not in (".pending", ".failed")]
                todo += [Path(dirpath) / f for f in filenames]
        remaining = set(todo)

        def done():
            for p in list(remaining):
                s = self.state(p)
                if s == "uploaded":
                    remaining.discard(p)
                elif s in ("failed", "<absent>", "<ENOENT>"):
                    raise WaitAbort(
                        f"{p} is {s}, expected it to upload\n"
                        + self.describe([p]))
            return not remaining

        wait_until(done, timeout, f"{len(todo)} file(s) to be uploaded",
                   state=lambda: f"{len(remaining)} not uploaded yet\n"
                   + self.describe(sorted(remaining)))

    def wait_dest_matches(self, src, dest="local", timeout=60.0, **kw):
        """Wait until the destination equals src file for file (and holds
        nothing else), then return."""
        def ok():
            assert_same_files(src, self.dest_dir(dest), **kw)
            return True
        wait_until(ok, timeout, f"destination {dest} to match {src}",
                   state=lambda: self.describe(), interval=0.05)

    def data_files(self) -> list[str]:
        """Spool files holding content.  An emptied data file kept for
        reuse (`free.N`, spool.c node_recycle_data_locked()) holds none; one that still
        held bytes would be listed."""
        d = self.data_dir()
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not (
            re.fullmatch(r"free\.[0-9]+", n) and (d / n).stat().st_size == 0))

    def trash_rows(self) -> int:
        """Removals on a server still to run: the journal's rows in the
        trash area (SPOOL_AREA_TRASH, journal.h), read beside the daemon
        (WAL lets a reader in)."""
        import sqlite3
        from contextlib import closing
        uri = f"file:{self.spool / 'journal.db'}?mode=ro"
        # (a connection's own `with` commits but does not close it)
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            return db.execute("SELECT count(*) FROM nodes WHERE area = 2"
                              ).fetchone()[0]

    def wait_trash_empty(self, timeout=30.0):
        wait_until(lambda: self.trash_rows() == 0, timeout,
                   "the removals on the server to run",
                   state=lambda: self.describe())

    def wait_spool_empty(self, timeout=20.0):
        wait_until(lambda: not self.data_files(), timeout,
                   f"spool {self.data_dir()} to be empty (content freed after upload)",
                   state=lambda: self.describe())

    def pending(self, dest="local") -> list[str]:
        root = self.m(dest, ".pending")
        out = []
        for dirpath, _, filenames in os.walk(root):
            out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
        return sorted(out)

    def failed(self, dest="local") -> list[str]:
        root = self.m(dest, ".failed")
        out = []
        for dirpath, _, filenames in os.walk(root):
            out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
        return sorted(out)

    # -- teardown
    def teardown(self) -> list[str]:
        problems = []
        for d in self.daemons:
            try:
                problems += d.stop()
            except Exception as e:  # noqa: BLE001
                problems.append(f"stopping daemon {d.argv}: {e!r}")
        if is_mounted(self.mnt):
            fusermount_u(self.mnt, lazy=True)
        for t in reversed(self.extra_mounts):
            r = subprocess.run(["umount", str(t)], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", str(t)], capture_output=True)
        bad = self.unexpected_log_lines()
        if bad:
            problems.append("unexpected lines in the daemon's log:\n  "
                            + "\n  ".join(bad[:30]))
        return problems


LSAN_SUPP = Path(__file__).resolve().parent / "libssh2-lsan.supp"


def child_env(**extra) -> dict:
    """Environment for the daemon or a `spoolfs` subcommand.  Sanitizer
    builds: suppress libssh2 1.10's own leaks (see the file); the library
    is linked in whatever the destinations are."""
    env = dict(os.environ, **extra)
    if "suppressions=" not in env.get("LSAN_OPTIONS", ""):
        env["LSAN_OPTIONS"] = (env.get("LSAN_OPTIONS", "")
                               + f":suppressions={LSAN_SUPP}").lstrip(":")
    return env


def make_flat_tree(root: Path, n: int, size: int, dirs=20,
                   seed=0) -> Path:
    """N files of SIZE pseudo-random bytes in DIRS directories under ROOT,
    with distinct mtimes."""
    per = max(1, n // dirs)
    for i in range(n):
        write_file(root / f"d{i // per:03d}" / f"f{i:05d}.dat",
                   pseudo_random(size, seed * 100000 + i),
                   mtime=1_500_000_000 + i)
    return root


def all_xattrs(root: Path) -> str:
    """Every xattr of everything under ROOT, "PATH NAME=VALUE" per line
    (for tests that look for a secret on every surface)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            path = os.path.join(dirpath, n)
            try:
                names = os.listxattr(path)
            except OSError:
                continue
            for a in names:
                try:
                    out.append(f"{path} {a}="
                               + os.getxattr(path, a).decode(errors="replace"))
                except OSError:
                    pass
    return "\n".join(out)


def unavailable(reason: str, require_env: str):
    """A server or tool a test needs is missing: skip, unless REQUIRE_ENV
    (SPOOLFS_REQUIRE_SFTP, SPOOLFS_REQUIRE_FTP; .ci/run sets both) is 1,
    where a missing piece fails the test instead of hiding behind a skip."""
    import pytest

    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason} ({require_env}=1)", pytrace=False)
    pytest.skip(reason)


def need_root():
    """Password logins need root: PAM checks a real unix user."""
    if os.geteuid() != 0:
        unavailable("password logins need root (PAM and a unix user)",
                    "SPOOLFS_REQUIRE_SFTP")

