"""ftp_server.py - real FTP servers on 127.0.0.1 for spoolfs's tests.

FtpServer starts vsftpd (or pure-ftpd, where it has been unpacked) in the
foreground on a free loopback port, serving a fresh directory, in one of
three modes:

  plain     ftp://      no TLS
  explicit  ftps://     AUTH TLS on the control port, TLS required for login
                        and data, require_ssl_reuse=YES (vsftpd's default and
                        the trap that left 0-byte files behind the old
                        uploader)
  implicit  ftps://     TLS from the first byte (tls_mode = implicit)

Logins are local-user logins of a real unix user with a password
(``spoolfs-ftp`` by default, created on first use; needs root, as vsftpd's
local logins do).  The certificate is self-signed with
subjectAltName=IP:127.0.0.1, so it verifies when handed over as the CA
(``tls_ca``) and fails verification otherwise.

``kill()`` SIGKILLs the server and every session process (its own process
group); ``start()`` brings it back on the same port with the same
certificate.  ``close()`` (or leaving the ``with`` block) always stops it and
removes the temp dir.

Usable on its own:  python3 ftp_server.py explicit   (prints a config, waits)
"""

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

VSFTPD = "/usr/sbin/vsftpd"
TEST_USER = "spoolfs-ftp"
TEST_PASSWORD = "Sp00l-ftp-test"
MODES = ("plain", "explicit", "implicit")

# Where a pure-ftpd unpacked with `apt-get download pure-ftpd` +
# `dpkg-deb -x` lives (its package conflicts with vsftpd's).
PURE_FTPD_CANDIDATES = (
    os.environ.get("SPOOLFS_PURE_FTPD", ""),
    "/opt/pure-ftpd/usr/sbin/pure-ftpd",
    "/usr/sbin/pure-ftpd",
)


def pure_ftpd_path():
    for p in PURE_FTPD_CANDIDATES:
        if p and os.access(p, os.X_OK):
            return p
    return None


def have_vsftpd():
    return os.access(VSFTPD, os.X_OK)


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid):
    """True while PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n=16):
    """A run of N free ports for passive data connections."""
    for _ in range(200):
        base = free_port()
        if base + n > 65535:
            continue
        if all(_port_free(p) for p in range(base, base + n)):
            return base, base + n - 1
    raise RuntimeError("no free passive port range on 127.0.0.1")


def ensure_user(name=TEST_USER, password=TEST_PASSWORD):
    """Create (once) a unix user that can log in over FTP with PASSWORD."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        # vsftpd changes to the home directory before local_root: "/" is
        # always there.  The shell must be in /etc/shells (pam_shells).
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/",
                        "--shell", "/bin/sh", "--user-group", name],
                       check=True, capture_output=True)
    # Always (re)set the password so a stale user from an older run works.
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True,
                   check=True, capture_output=True)
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def make_cert(directory):
    """Self-signed RSA cert + key for 127.0.0.1; returns (cert, key)."""
    cert = os.path.join(directory, "server.crt")
    key = os.path.join(directory, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "3",
                    "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


class FtpServer:
    """One FTP server on 127.0.0.1.  See the module comment."""

    def __init__(self, mode="plain", impl="vsftpd", chroot=False,
                 user=TEST_USER, password=TEST_PASSWORD, port=None,
                 extra_conf=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if os.geteuid() != 0:
            raise RuntimeError("FTP local-user logins need root")
        self.mode = mode
        self.impl = impl
        self.chroot = chroot
        self.user = user
        self.password = password
        self.extra_conf = dict(extra_conf or {})
        self.proc = None
        self.tmp = tempfile.mkdtemp(prefix=f"spoolfs-{impl}-{mode}-")
        os.chmod(self.tmp, 0o755)
        self.uid, self.gid = ensure_user(user, password)
        # The directory the FTP user logs into; the tests' files land here.
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.home)
        os.chown(self.home, self.uid, self.gid)
        self.empty = os.path.join(self.tmp, "empty")
        os.mkdir(self.empty, 0o755)
        self.log = os.path.join(self.tmp, f"{impl}.log")
        self.cert = self.key = None
        if mode != "plain":
            self.cert, self.key = make_cert(self.tmp)
        self.port = port or free_port()
        self.pasv = free_port_range()
        self.conf = os.path.join(self.tmp, f"{impl}.conf")

    # -- properties a test needs -------------------------------------------
    @property
    def scheme(self):
        return "ftp" if self.mode == "plain" else "ftps"

    def url(self, path=""):
        return f"{self.scheme}://127.0.0.1:{self.port}/{path}"

    def entry_dir(self):
        """Absolute local path of the FTP login directory."""
        return self.home

    # -- lifecycle -----------------------------------------------------------
    def _vsftpd_conf(self):
        c = {
            "listen": "YES",
            "listen_ipv6": "NO",
            "listen_address": "127.0.0.1",
            "listen_port": str(self.port),
            "background": "NO",
            "anonymous_enable": "NO",
            "local_enable": "YES",
            "write_enable": "YES",
            "local_umask": "022",
            "local_root": self.home,
            "chroot_local_user": "YES" if self.chroot else "NO",
            "allow_writeable_chroot": "YES",
            "pam_service_name": "vsftpd",
            "userlist_enable": "NO",
            "seccomp_sandbox": "NO",
            "secure_chroot_dir": self.empty,
            "pasv_enable": "YES",
            "pasv_min_port": str(self.pasv[0]),
            "pasv_max_port": str(self.pasv[1]),
            "pasv_address": "127.0.0.1",
            "port_enable": "YES",
            "connect_from_port_20": "NO",
            "xferlog_enable": "YES",
            "vsftpd_log_file": self.log,
            "xferlog_file": self.log,
            "dual_log_enable": "NO",
            "log_ftp_protocol": "YES",
            "mdtm_write": "YES",
            "use_localtime": "NO",
            "delay_failed_login": "1",
            "idle_session_timeout": "600",
            "data_connection_timeout": "120",
        }
        if self.mode != "plain":
            c.update({
                "ssl_enable": "YES",
                "rsa_cert_file": self.cert,
                "rsa_private_key_file": self.key,
                "ssl_ciphers": "HIGH",
                "ssl_tlsv1": "YES",
                "ssl_sslv2": "NO",
                "ssl_sslv3": "NO",
                "force_local_logins_ssl": "YES",
                "force_local_data_ssl": "YES",
                "require_ssl_reuse": "YES",
                "implicit_ssl": "YES" if self.mode == "implicit" else "NO",
            })
        c.update(self.extra_conf)
        with open(self.conf, "w") as f:
            for k, v in c.items():
                f.write(f"{k}={v}\n")
        os.chmod(self.conf, 0o600)
        return [VSFTPD, self.conf]

    def _pure_ftpd_cmd(self):
        binary = pure_ftpd_path()
        if not binary:
            raise RuntimeError("pure-ftpd is not unpacked")
        # A private puredb with one virtual user mapped to the test uid.
        passwd = os.path.join(self.tmp, "pureftpd.passwd")
        pdb = os.path.join(self.tmp, "pureftpd.pdb")
        # SHA-512-crypt: the default hash makes each login take seconds.
        h = subprocess.run(["openssl", "passwd", "-6", "-stdin"],
                           input=self.password, text=True, check=True,
                           capture_output=True).stdout.strip()
        home = self.home + ("/./" if self.chroot else "")
        with open(passwd, "w") as f:
            f.write(f"{self.user}:{h}:{self.uid}:{self.gid}::{home}::::::::::::\n")
        os.chmod(passwd, 0o600)
        pw_bin = os.path.join(os.path.dirname(os.path.dirname(binary)),
                              "bin", "pure-pw")
        if not os.access(pw_bin, os.X_OK):
            pw_bin = shutil.which("pure-pw")
        subprocess.run([pw_bin, "mkdb", pdb, "-f", passwd], check=True,
                       capture_output=True)
        cmd = [binary,
               "--bind", f"127.0.0.1,{self.port}",
               "--login", f"puredb:{pdb}",
               "--passiveportrange", f"{self.pasv[0]}:{self.pasv[1]}",
               "--forcepassiveip", "127.0.0.1",
               "--noanonymous", "--dontresolve",
               "--minuid", "1",
               "--maxclientsnumber", "50", "--maxclientsperip", "50",
               "--altlog", f"clf:{self.log}",
               "--verboselog"]
        if self.chroot:
            cmd.append("--chrooteveryone")
        if self.mode != "plain":
            # pure-ftpd wants cert + key in one PEM file.
            pem = os.path.join(self.tmp, "pure-ftpd.pem")
            with open(pem, "w") as out:
                for p in (self.key, self.cert):
                    with open(p) as inp:
                        out.write(inp.read())
            os.chmod(pem, 0o600)
            cmd += ["--tls", "2", "--certfile", pem]
            if self.mode == "implicit":
                raise RuntimeError("pure-ftpd has no implicit TLS")
        return cmd

    def start(self, timeout=10.0):
        if self.proc and self.proc.poll() is None:
            return self
        cmd = self._vsftpd_conf() if self.impl == "vsftpd" \
            else self._pure_ftpd_cmd()
        self._stderr = open(os.path.join(self.tmp, f"{self.impl}.stderr"), "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.impl} exited with "
                                   f"{self.proc.returncode}: {self.stderr()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=1):
                    # A connect that succeeds means the listener is up; the
                    # session it spawns just sees us hang up.
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.impl} did not listen on {self.port}")

    def _descendants(self):
        """PIDs of every process below the server (its sessions)."""
        children = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.proc.pid]
        while todo:
            for c in children.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out

    def kill(self):
        """SIGKILL the server and every session it forked.

        vsftpd's session processes leave the server's process group, so
        they are found as its descendants and killed one by one (stopped
        first, so that none forks or is reparented in between).
        """
        if not self.proc:
            return
        pids = []
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            pids = self._descendants()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            pids += [p for p in self._descendants() if p not in pids]
        for pid in [self.proc.pid] + pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        # The sessions were the server's children, now init's: wait until
        # they are gone, so that their sockets are closed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(map(_alive, pids)):
            time.sleep(0.02)
        self.proc = None
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    def _signal_all(self, sig):
        for pid in [self.proc.pid] + self._descendants():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def freeze(self):
        """SIGSTOP the server and its sessions: connections stay open, mute."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self):
        self._signal_all(signal.SIGCONT)

    def close(self):
        """Stop the server and remove its directory (kept, with its log,
        when SPOOLFS_KEEP_FTP_SERVER=1, for a failure to look into)."""
        self.kill()
        if os.environ.get("SPOOLFS_KEEP_FTP_SERVER") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def stderr(self):
        try:
            with open(os.path.join(self.tmp, f"{self.impl}.stderr")) as f:
                return f.read()
        except OSError:
            return ""

    def protocol_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- spoolfs configuration -----------------------------------------------
    def write_config(self, directory, dest="nas", path="", password=None,
                     tls_ca=True, extra=None):
        """Write a spoolfs INI with [dest DEST] for this server; return its path.

        PATH is the destination root relative to the login directory.
        tls_ca=False leaves the CA out (verification must then fail);
        password overrides the right one (wrong-password tests).
        """
        pwfile = os.path.join(directory, f"{dest}.pass")
        with open(pwfile, "w") as f:
            f.write((self.password if password is None else password) + "\n")
        os.chmod(pwfile, 0o600)
        spool = os.path.join(directory, "spool")
        os.makedirs(spool, exist_ok=True)
        lines = ["[spool]", f"dir = {spool}", "",
                 f"[dest {dest}]", f"url = {self.url(path)}",
                 f"user = {self.user}", f"password_file = {pwfile}"]
        if self.mode != "plain":
            lines.append(f"tls_mode = {self.mode}")
            if tls_ca:
                lines.append(f"tls_ca = {self.cert}")
        for k, v in (extra or {}).items():
            lines.append(f"{k} = {v}")
        cfg = os.path.join(directory, "spoolfs.conf")
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(cfg, 0o600)
        return cfg


class ControlProxy:
    """A relay on a free 127.0.0.1 port in front of a plain-FTP server's
    control port, that can lose a reply the way a dropped link does:
    after ``drop_reply("RNTO")`` the server's next final reply to an RNTO
    (the command done there) is not passed on, and both connections are
    closed instead.  ``commands`` lists every command relayed (verbs and
    arguments, PASS masked); ``dropped`` is set once a reply was lost, and
    ``commands[dropped_at:]`` is what came after.
    Data connections (EPSV, PASV) go straight to the server."""

    def __init__(self, server_port: int):
        self.server_port = server_port
        self.commands: list[str] = []
        self.dropped = threading.Event()
        self.dropped_at = 0
        self._armed: str | None = None
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(8)
        self.port = self._listen.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_reply(self, verb: str):
        self._armed = verb.upper()

    def _accept(self):
        while True:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return          # closed
            try:
                server = socket.create_connection(
                    ("127.0.0.1", self.server_port), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            last = [""]         # the verb of the last command sent on
            threading.Thread(target=self._upstream,
                             args=(client, server, last), daemon=True).start()
            threading.Thread(target=self._downstream,
                             args=(client, server, last), daemon=True).start()

    def _upstream(self, client, server, last):
        for line in client.makefile("rb"):
            text = line.decode("latin-1").rstrip("\r\n")
            verb = text.split(" ", 1)[0].upper()
            self.commands.append("PASS ****" if verb == "PASS" else text)
            last[0] = verb
            try:
                server.sendall(line)
            except OSError:
                break
        self._drop(client, server)

    def _downstream(self, client, server, last):
        for line in server.makefile("rb"):
            final = line[:3].isdigit() and line[3:4] == b" "
            if final and self._armed and last[0] == self._armed:
                self._armed = None
                self._drop(client, server)
                self.dropped_at = len(self.commands)
                self.dropped.set()
                return
            try:
                client.sendall(line)
            except OSError:
                break
        self._drop(client, server)

    @staticmethod
    def _drop(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self._listen.close()
        with self._lock:
            for s in self._socks:
                self._drop(s)
                s.close()


def main():
    import sys
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    impl = sys.argv[2] if len(sys.argv) > 2 else "vsftpd"
    with FtpServer(mode, impl=impl) as srv:
        d = tempfile.mkdtemp(prefix="spoolfs-ftpcfg-")
        print(open(srv.write_config(d)).read())
        print(f"# files land in {srv.home}; log {srv.log}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
