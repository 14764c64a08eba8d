#!/usr/bin/python3
"""benchmarks/net_strace.py ftp|sftp [SPOOLFS_BINARY]

Evidence for RESULTS.md's notes: `strace -c -f` attached to the spoolfs
daemon while `cp -r` of 2000 x 4 KiB files goes into an ftp:// (vsftpd,
plain) or sftp:// (OpenSSH) destination on 127.0.0.1, until the last file is
on the server; prints syscalls per file.  Uses benchmarks/run's helpers and
the servers of tests/integration/.  Default binary: the release build of HEAD
that benchmarks/run left in /var/tmp/spoolfs-bench-build/, else the newest.  Root only."""
import importlib.machinery, importlib.util, sys, os, subprocess, time, signal, shutil, tempfile, types
from pathlib import Path
HERE = Path(__file__).resolve().parent
loader = importlib.machinery.SourceFileLoader("benchrun", str(HERE / "run"))
spec = importlib.util.spec_from_loader("benchrun", loader)
m = importlib.util.module_from_spec(spec); loader.exec_module(m)
proto = sys.argv[1]
if len(sys.argv) > 2:
    binary = sys.argv[2]
else:
    head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()[:12]
    binary = f"/var/tmp/spoolfs-bench-build/{head}/spoolfs"
    if not os.path.exists(binary):     # else the newest build there
        builds = sorted(Path("/var/tmp/spoolfs-bench-build").glob("*/spoolfs"),
                        key=lambda p: p.stat().st_mtime)
        if not builds:
            sys.exit("no spoolfs build: run benchmarks/run first or give one")
        binary = str(builds[-1])
print(f"spoolfs binary: {binary}")
tmp = Path(tempfile.mkdtemp(prefix="strace-net-", dir="/var/tmp"))
b = types.SimpleNamespace(tmp=tmp, mounts=[], spoolfs=Path(binary), small_names=[f"f{i:04d}.bin" for i in range(2000)])
b.small_src = tmp / "src"; b.small_src.mkdir()
for n in b.small_names: (b.small_src / n).write_bytes(os.urandom(4096))
srv = m.SftpServer(b) if proto == "sftp" else m.FtpSrv(b, "plain")
mt = None
try:
    d, rpath = srv.new_dir("st")
    mt = m.Mount(b, "st", dest_name="box", dest_conf=srv.spoolfs_conf(rpath)).start()
    out = tmp / "strace.txt"
    st = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(mt.proc.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(b.small_src), str(mt.root / "t")], check=True)
    c = time.perf_counter() - t0
    arr = m.wait_server(d, [(f"t/{n}", 4096) for n in b.small_names], t0, 300)
    time.sleep(0.3)
    st.send_signal(signal.SIGINT)
    st.wait()
    rows = []
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit():
            rows.append((int(f[3]), f[-1]))
    report = [f"{proto}: cp -r {c:.2f} s, all on the server after {m.fmt(arr, '.2f')} s "
              "(under strace: slow; read the counts)"]
    report += [f"{name:20s} {calls:8d} {calls / 2000:7.2f}/file"
               for calls, name in sorted(rows, reverse=True)[:20]]
finally:
    if mt:
        mt.remove()          # unmount before anything can fail on output
    srv.close()
    shutil.rmtree(tmp, ignore_errors=True)
print("\n".join(report))
