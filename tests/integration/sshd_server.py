"""A real OpenSSH sshd on 127.0.0.1 for tests: SshServer.

    with SshServer() as srv:            # key login as the current user
        srv.host, srv.port, srv.root     # where to upload
        srv.user, srv.client_key         # identity = srv.client_key
        srv.known_hosts                  # "[127.0.0.1]:PORT ssh-ed25519 ..."
        srv.host_key_sha256              # "SHA256:..." for a host_key pin
        srv.kill()                       # SIGKILL listener + session children
        srv.start()                      # again: same port, same keys

Everything lives in a temp dir that is removed on exit: host key, client
keys, authorized_keys, sshd_config, the upload root and sshd's log
(srv.log_text()).  The server serves `Subsystem sftp internal-sftp`.

Password and keyboard-interactive logins (password=..., kbd_interactive=...)
go through PAM, which needs a real unix user with that password: pass
user=TEST_USER; ensure_test_user() creates `spoolfs-test` (useradd, no home,
no shell) if it is missing and sets its password with chpasswd.  That needs
root, as does sshd with UsePAM (it also needs /run/sshd, created here).
The upload root is chowned to the login user.

Options:
  user             login user (default: the current user)
  password         enable PasswordAuthentication (needs a real user; the
                   value is set as that user's password)
  kbd_interactive  enable keyboard-interactive (PAM) auth; with
                   password_auth=False it is the only password method
  password_auth    offer the "password" method (default: bool(password))
  pubkey           offer publickey auth (default True)
  start_dir        internal-sftp -d: the login directory the client starts
                   in (default: the user's home)
  extra_config     more sshd_config lines (they win over the defaults)
  sftp_flags       more internal-sftp flags, e.g. "-l VERBOSE" (logs every
                   request to the sshd log)
  host_key_types   host keys to generate, e.g. ("ed25519", "ecdsa"); the
                   first is the one known_hosts and host_key_sha256 describe
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
TEST_USER = "spoolfs-test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_test_user(name: str = TEST_USER, password: str | None = None) -> str:
    """Create unix user NAME if missing (root only) and set PASSWORD."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin",
                        name], check=True)
    if password is not None:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n",
                       text=True, check=True)
    return name


def keygen(path: Path, ktype: str = "ed25519", passphrase: str = "",
           bits: int | None = None, fmt: str | None = None) -> Path:
    """ssh-keygen a key pair at PATH (+ .pub); returns PATH."""
    cmd = ["ssh-keygen", "-q", "-t", ktype, "-N", passphrase, "-C",
           f"spoolfs-test-{ktype}", "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    if fmt:
        cmd += ["-m", fmt]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return path


def fingerprint(pub: Path) -> str:
    """SHA256:... fingerprint of a public key file."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the server if the test process dies first."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG,
                                            signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """All descendants of PID (from /proc), deepest last."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class SshServer:
    host = "127.0.0.1"

    def __init__(self, user: str | None = None, password: str | None = None,
                 kbd_interactive: bool = False,
                 password_auth: bool | None = None, pubkey: bool = True,
                 start_dir: str | None = None, extra_config: str = "",
                 port: int | None = None,
                 host_key_types: tuple[str, ...] = ("ed25519",),
                 sftp_flags: str = ""):
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.password = password
        self.kbd_interactive = kbd_interactive
        self.password_auth = (password is not None if password_auth is None
                              else password_auth)
        self.pubkey = pubkey
        self.start_dir = start_dir
        self.extra_config = extra_config
        self.sftp_flags = sftp_flags
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="spoolfs-sshd-"))
        os.chmod(self.dir, 0o755)
        self.root = self.dir / "root"
        self.root.mkdir()
        self.log_path = self.dir / "sshd.log"
        self.host_keys = {t: keygen(self.dir / f"host_{t}", t)
                          for t in host_key_types}
        self.host_key = self.host_keys[host_key_types[0]]
        self.host_key_sha256 = fingerprint(self.host_key.with_suffix(".pub"))
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.touch()
        self.client_key = self.add_client_key("ed25519")
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line() + "\n")
        if self.password is not None or self.kbd_interactive:
            if os.geteuid() != 0:
                raise RuntimeError("password login needs root (PAM + a unix user)")
            if self.user == TEST_USER:
                ensure_test_user(self.user, self.password)
        pw = pwd.getpwnam(self.user)
        if os.geteuid() == 0:
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.config = self.dir / "sshd_config"
        self._write_config()

    # ------------------------------------------------------------ keys

    def known_hosts_line(self, host: str | None = None,
                         key_type: str | None = None) -> str:
        """The known_hosts line for one host key (default: the first)."""
        key = self.host_keys[key_type] if key_type else self.host_key
        pub = key.with_suffix(".pub").read_text().split()
        name = host or (f"[{self.host}]:{self.port}" if self.port != 22
                        else self.host)
        return f"{name} {pub[0]} {pub[1]}"

    def add_client_key(self, ktype: str = "ed25519", passphrase: str = "",
                       authorize: bool = True, **kw) -> Path:
        """Generate another client key; authorize it unless told not to."""
        n = len(list(self.dir.glob("client_*.pub")))
        path = keygen(self.dir / f"client_{ktype}_{n}", ktype, passphrase, **kw)
        os.chmod(path, 0o600)
        if authorize:
            with open(self.authorized_keys, "a") as f:
                f.write(path.with_suffix(".pub").read_text())
        return path

    # ------------------------------------------------------------ config

    def _write_config(self) -> None:
        usepam = self.password is not None or self.kbd_interactive
        sftp = "internal-sftp"
        if self.start_dir:
            sftp += f" -d {self.start_dir}"
        if self.sftp_flags:
            sftp += f" {self.sftp_flags}"
        # sshd keeps the first value of a keyword: extra lines go first.
        lines = [self.extra_config] if self.extra_config else []
        lines += [
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            *[f"HostKey {k}" for k in self.host_keys.values()],
            "PidFile none",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            f"UsePAM {'yes' if usepam else 'no'}",
            f"PubkeyAuthentication {'yes' if self.pubkey else 'no'}",
            f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
            f"KbdInteractiveAuthentication "
            f"{'yes' if self.kbd_interactive else 'no'}",
            "PermitRootLogin yes",
            f"AllowUsers {self.user}",
            "MaxStartups 100:30:200",
            "MaxSessions 20",
            "LogLevel VERBOSE",
            f"Subsystem sftp {sftp}",
        ]
        self.config.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ life

    def start(self, timeout: float = 10.0) -> "SshServer":
        if self.proc and self.proc.poll() is None:
            return self
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log,
                                     preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), 0.5) as s:
                    s.settimeout(2)
                    if s.recv(8).startswith(b"SSH-"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"sshd did not answer on port {self.port}:\n"
                                   f"{self.log_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the listener and every session process it spawned."""
        if not self.proc:
            return
        pids = [self.proc.pid] + _children(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def reconfigure(self, **attrs) -> "SshServer":
        """Change options (start_dir=..., extra_config=...), rewrite the
        config and restart the server if it was running."""
        running = self.proc is not None
        for k, v in attrs.items():
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, v)
        self._write_config()
        if running:
            self.kill()
            self.start()
        return self

    def sessions(self) -> list[int]:
        """Pids of the listener's session children (one per connection)."""
        return _children(self.proc.pid) if self.proc else []

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "SshServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def url(self, path: str | None = None) -> str:
        """sftp://user@127.0.0.1:PORT/ROOT (curl rules: an absolute path)."""
        return f"sftp://{self.user}@{self.host}:{self.port}{path or self.root}"
