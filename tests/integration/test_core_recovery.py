"""Durability: kill -9 with a queue and a half-written file, unmount with
uploads pending, a full spool disk and the spool quota."""

import os
import re
import subprocess

import pytest

from spoolfs_harness import (assert_same_files, pseudo_random, run, wait_until,
                             write_file)

INCOMPLETE_LOG = r"incomplete|not closed|still being written"
NOSPACE_LOG = r"(?i)no space|ENOSPC|full|quota"


def count_files(d):
    return sum(1 for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.allow_log(INCOMPLETE_LOG)
def test_kill9_with_queue_and_half_written_file(sfs):
    dest = sfs.add_dest("local", max_rate="100K", connections=1)
    sfs.mount()
    src = sfs.src / "batch"
    for i in range(200):
        write_file(src / f"{i // 50}" / f"file{i:03d}.dat", pseudo_random(2048, 300 + i))
    run(["cp", "-r", src, sfs.m("local")])       # every close() returned

    half = sfs.m("local", "half.bin")
    part = pseudo_random(300_000, 999)
    f = open(half, "wb")
    try:
        f.write(part)
        f.flush()
        assert sfs.state(half) == "writing"
        assert sfs.pending(), "premise: max_rate = 100K should keep files queued"
        arrived = count_files(dest)
        sfs.kill9()
    finally:
        try:
            f.close()
        except OSError:
            pass                                  # the daemon is gone
    print(f"{arrived} of 200 had arrived when the daemon was killed")

    sfs.remount()                                 # same config
    sfs.wait_uploaded(files_under=sfs.m("local", "batch"), timeout=90)
    failed = sfs.m("local", ".failed/half.bin")
    wait_until(failed.exists, 20, f"{failed} to appear",
               state=lambda: sfs.describe())
    x = sfs.xattrs(failed)
    assert x["state"] == "failed" and "incomplete" in x["error"], x
    assert failed.read_bytes() == part
    assert not half.exists(), "the incomplete file must not stay in DEST/"
    assert sfs.failed() == ["half.bin"]
    # all closed files, byte for byte; the half-written one never uploaded
    assert_same_files(sfs.src, dest)
    wait_until(lambda: len(sfs.data_files()) == 1, 20,
               "spool data/ to hold only the failed file",
               state=lambda: sfs.describe())


def test_unmount_with_uploads_pending_then_remount_finishes(sfs):
    dest = sfs.add_dest("local", max_rate="200K", connections=1)
    sfs.mount()
    src = sfs.src / "up"
    for i in range(4):
        write_file(src / f"part{i}.bin", pseudo_random(512 * 1024, 400 + i))
    run(["cp", "-r", src, sfs.m("local")])
    sfs.wait_state(sfs.m("local", "up/part0.bin"), "uploading")
    sfs.unmount(timeout=15)                       # must not wait for uploads
    done = [p.name for p in (dest / "up").glob("*.bin")] if (dest / "up").exists() else []
    assert len(done) < 4, "premise: uploads should still be pending at unmount"

    sfs.dests["local"]["max_rate"] = "4M"
    sfs.mount()
    sfs.wait_uploaded(files_under=sfs.m("local", "up"), timeout=60)
    assert_same_files(sfs.src, dest)
    sfs.wait_spool_empty()


def check_incomplete_and_discard(sfs, rel, src):
    """A file whose write failed is never queued: it sits in .failed/ with
    an "incomplete" error and what was written (a prefix of src); rm it."""
    f = sfs.m("local", ".failed/" + rel)
    wait_until(f.exists, 10, f"{f} to appear", state=lambda: sfs.describe())
    x = sfs.xattrs(f)
    assert x["state"] == "failed" and x["error"].startswith("incomplete"), x
    assert not sfs.m("local", rel).exists()
    kept = f.read_bytes()
    assert len(kept) < src.stat().st_size
    assert src.read_bytes()[: len(kept)] == kept
    run(["rm", f])
    assert sfs.failed() == []


@pytest.mark.allow_log(NOSPACE_LOG)
def test_enospc_when_the_spool_disk_is_full(sfs):
    sfs.spool = sfs.mount_tmpfs(sfs.root / "small", "8M")
    sfs.set_spool(dir=str(sfs.spool))
    dest = sfs.add_dest("local", max_rate="500K", connections=1)
    sfs.mount()
    q = sfs.src / "q"
    write_file(q / "q1.bin", pseudo_random(1 << 20, 500))
    write_file(q / "q2.bin", pseudo_random(1 << 20, 501))
    run(["cp", q / "q1.bin", q / "q2.bin", sfs.m("local")])
    write_file(sfs.src / "big" / "big.bin", pseudo_random(16 << 20, 502))
    r = run(["cp", sfs.src / "big/big.bin", sfs.m("local")], check=False)
    assert r.returncode != 0 and "No space left on device" in r.stderr, r
    check_incomplete_and_discard(sfs, "big.bin", sfs.src / "big/big.bin")
    # the queued files were not touched, and space is usable again
    write_file(q / "small.bin", pseudo_random(100_000, 503))
    run(["cp", q / "small.bin", sfs.m("local")])
    sfs.wait_uploaded(*[sfs.m("local", n) for n in ("q1.bin", "q2.bin", "small.bin")],
                      timeout=60)
    assert_same_files(q, dest)
    sfs.wait_spool_empty()


@pytest.mark.allow_log(NOSPACE_LOG)
def test_enospc_past_max_size(sfs):
    sfs.set_spool(max_size="1M")
    dest = sfs.add_dest("local", max_rate="200K", connections=1)
    sfs.mount()
    q = sfs.src / "q"
    write_file(q / "first.bin", pseudo_random(512 * 1024, 600))
    run(["cp", q / "first.bin", sfs.m("local")])
    write_file(sfs.src / "big" / "big.bin", pseudo_random(1 << 20, 601))
    r = run(["cp", sfs.src / "big/big.bin", sfs.m("local")], check=False)
    assert r.returncode != 0 and "No space left on device" in r.stderr, r
    check_incomplete_and_discard(sfs, "big.bin", sfs.src / "big/big.bin")
    sfs.wait_uploaded(sfs.m("local", "first.bin"))
    # the quota counts unsent data only: after the upload there is room again
    write_file(q / "second.bin", pseudo_random(768 * 1024, 602))
    run(["cp", q / "second.bin", sfs.m("local")])
    sfs.wait_uploaded(sfs.m("local", "second.bin"))
    assert_same_files(q, dest)
    sfs.wait_spool_empty()


def pool_files(sfs):
    return sorted(n for n in os.listdir(sfs.data_dir()) if n.startswith("free."))


def test_spool_files_are_recycled_emptied_and_never_outlive_the_mount(sfs):
    """The spool copies of uploaded small files are emptied and kept as
    data/free.N for the next files: a shorter file written into one must
    arrive with its own length (a recycled file that kept old bytes would
    send them), and no free.N survives an unmount or a kill -9."""
    dest = sfs.add_dest("local")
    sfs.mount()
    big = {f"old{i}.bin": pseudo_random(50_000, 700 + i) for i in range(6)}
    for name, data in big.items():
        sfs.m("local", name).write_bytes(data)
    sfs.wait_uploaded(files_under=sfs.m("local"))
    sfs.wait_spool_empty()                 # free.N may remain: all empty
    kept = pool_files(sfs)
    assert kept, "premise: uploaded small files should be recycled"
    assert all((sfs.data_dir() / n).stat().st_size == 0 for n in kept)

    short = {f"new{i}.txt": pseudo_random(10 + i, 800 + i) for i in range(4)}
    for name, data in short.items():
        sfs.m("local", name).write_bytes(data)
    sfs.wait_uploaded(files_under=sfs.m("local"))
    for name, data in {**big, **short}.items():
        assert (dest / name).read_bytes() == data, name

    sfs.unmount()
    assert os.listdir(sfs.data_dir()) == [], "unmount leaves no spool file"

    sfs.mount()
    for name, data in big.items():
        sfs.m("local", "again-" + name).write_bytes(data)
    sfs.wait_uploaded(files_under=sfs.m("local"))
    sfs.wait_spool_empty()                 # drop.ID become free.N after a sync
    assert pool_files(sfs)
    sfs.kill9()
    sfs.remount()
    sfs.wait_spool_empty()
    assert pool_files(sfs) == [], "the mount after a crash sweeps free.N"


def test_a_copy_dropped_by_a_commit_the_disk_never_got_comes_back(sfs):
    """The journal commits without an fsync after an upload or an rm, so a
    power cut can take such a commit back: the row then wants its content
    again.  The content it dropped waits as data/drop.ID until a later sync
    covers the commit; the next mount gives drop.ID back to a row that
    still wants it, and removes the others.  Here the power cut is staged:
    kill -9 with one file queued, then its data file renamed the way the
    drop would have.  Without the restore the file would go to .failed/ as
    "spool copy lost"."""
    dest = sfs.add_dest("local", max_rate="100K", connections=1)
    sfs.mount()
    data = pseudo_random(1_000_000, 4242)
    write_file(sfs.m("local", "keep/DSC_0001.NEF"), data)
    assert sfs.state(sfs.m("local", "keep/DSC_0001.NEF")) in (
        "queued", "uploading")
    sfs.kill9()
    sfs.cleanup_dead_mount()
    ids = [n for n in os.listdir(sfs.data_dir()) if n.isdigit()]
    assert len(ids) == 1, os.listdir(sfs.data_dir())
    spool = sfs.data_dir()
    os.rename(spool / ids[0], spool / f"drop.{ids[0]}")
    # a drop nothing wants (its row has gone, its commit was synced)
    (spool / "drop.999999").write_bytes(b"not wanted by any row")

    sfs.dests["local"]["max_rate"] = "10M"
    sfs.mount()
    f = sfs.m("local", "keep/DSC_0001.NEF")
    sfs.wait_uploaded(f)
    assert (dest / "keep/DSC_0001.NEF").read_bytes() == data
    assert sfs.failed() == []
    assert re.search(r"spool copy of 'DSC_0001\.NEF' \(id \d+\) kept: the "
                     r"journal had not recorded that it was dropped",
                     sfs.log()), sfs.log_tail()
    sfs.wait_spool_empty()
    assert not [n for n in os.listdir(spool) if n.startswith("drop.")]



def trace_rewrite(sfs, rewrite):
    """Run REWRITE() with strace on the daemon.  Returns strace's lines
    (TID CALL...), the daemon's fds of the journal's WAL and the name of
    the one data file (the node id), which REWRITE() may create (a file
    in memory moves to its data file when it changes)."""
    pid = sfs.daemon.pid
    ids = [n for n in os.listdir(sfs.data_dir()) if n.isdigit()]
    assert len(ids) <= 1, os.listdir(sfs.data_dir())
    wal = {fd for fd in os.listdir(f"/proc/{pid}/fd")
           if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/journal.db-wal")}
    assert wal, "the daemon has its journal's WAL open"
    log = sfs.root / "strace.log"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", str(log), "-p", str(pid), "-e",
         "trace=openat,fdatasync,ftruncate,pwrite64,pwritev,pwritev2,"
         "write,splice,dup3"])

    def attached():
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/status") as st:
                if f"TracerPid:\t{tracer.pid}\n" not in st.read():
                    return False
        return True
    try:
        wait_until(attached, 10, "strace to attach to every thread")
        rewrite()
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    if not ids:
        ids = [n for n in os.listdir(sfs.data_dir()) if n.isdigit()]
        assert len(ids) == 1, os.listdir(sfs.data_dir())
    return log.read_text().splitlines(), wal, ids[0]


def synced_before_change(lines, data_id, is_sync_fd, copied=0):
    """Whether the thread that first changed data file DATA_ID, after it
    was last opened, had fdatasynced an fd for which IS_SYNC_FD(fd, fds)
    holds (FDS: the fds opened on DATA_ID) since that open.  COPIED: the
    file is created by the trace from memory: its first pwrite of COPIED
    bytes at 0 is that copy, not a change."""
    fds, synced = set(), set()
    for line in lines:
        tid, _, call = line.partition(" ")
        call = call.lstrip()
        m = re.match(r'openat\(\d+, "(\d+)", .*\)\s+=\s+(\d+)$', call)
        if m and m.group(1) == data_id:
            fds.add(m.group(2))
            synced = set()
            continue
        m = re.match(r"fdatasync\((\d+)", call)
        if m and fds and is_sync_fd(m.group(1), fds):
            synced.add(tid)
            continue
        m = re.match(r"dup3\((\d+), (\d+),", call)
        if m and m.group(1) in fds:
            fds.add(m.group(2))     # a handle's fd now on the data file
            continue
        if copied and re.match(rf"pwrite64\((\d+), .*, {copied}, 0\)", call):
            copied = 0
            continue
        m = re.match(r"(?:ftruncate|pwrite64|pwritev2?|write)\((\d+),|"
                     r"splice\(\d+, [^,]+, (\d+),", call)
        if m and fds & set(m.groups()):
            return tid in synced
    raise AssertionError("the trace shows no change of the spool copy:\n" +
                         "\n".join(lines[-40:]))


def journal_synced_before_change(lines, wal, data_id):
    """Whether the thread that first changed data file DATA_ID, after the
    rewrite opened it, had fsynced the WAL (an fd in WAL) since that open."""
    return synced_before_change(lines, data_id, lambda fd, fds: fd in wal)


@pytest.mark.parametrize("how", ["truncate", "overwrite"])
def test_a_rewrite_puts_the_journal_on_disk_before_the_old_bytes_change(
        sfs, how):
    """A file whose spool copy is kept, rewritten in place: the journal's
    "writing" must be on disk before the first old byte of the copy
    changes, or a power cut could bring back "uploaded/queued, N bytes"
    over a half-rewritten copy, and that mix would be uploaded as the file.
    A power cut cannot be staged here, so the order of the daemon's system
    calls is checked: an fsync of the journal's WAL by the same thread,
    between the open of the spool copy and its ftruncate or first write.
    (An append needs no sync: the row's N bytes are still the old ones.)"""
    dest = sfs.add_dest("local", keep_uploaded="yes")
    sfs.mount()
    f = sfs.m("local", "doc.txt")
    old = pseudo_random(50_000, 77)
    f.write_bytes(old)
    sfs.wait_uploaded(f)

    def rewrite():
        if how == "truncate":
            f.write_bytes(b"new content")
        else:
            with open(f, "r+b") as fh:
                fh.write(b"NEW")

    lines, wal, data_id = trace_rewrite(sfs, rewrite)
    assert journal_synced_before_change(lines, wal, data_id), \
        "no fsync of the journal before the change:\n" + "\n".join(lines[-40:])
    want = b"new content" if how == "truncate" else b"NEW" + old[3:]
    wait_until(lambda: (dest / "doc.txt").read_bytes() == want, 20,
               "the rewritten file on the destination",
               state=lambda: sfs.describe([f]))


INLINE_MAX = 32 * 1024      # spool_internal.h INLINE_FILE_MAX


def data_ids_by_size(sfs) -> dict[int, str]:
    """The numeric spool data files (node ids), by their size."""
    d = sfs.data_dir()
    out = {}
    for n in os.listdir(d):
        if n.isdigit():
            size = (d / n).stat().st_size
            assert size not in out, f"two data files of {size} bytes"
            out[size] = n
    return out


@pytest.mark.allow_log(r"small files written back from the journal")
@pytest.mark.parametrize("where", ["memory", "disk"])
def test_small_files_come_back_from_the_journal_after_a_power_cut(sfs, where):
    """A small file's close() commits its content into the journal with
    its row and fsyncs only the journal: one flush of the disk instead of
    two or three.  A new small file's content lives in memory until it is
    uploaded (memory), so a kill -9 takes it all; with memory files off
    (SPOOLFS_MEM_FILES=0: the data file of a file created when they are
    full) a power cut may take the data file back: never written, emptied,
    or its name from the recycled pool lost, staged here after a kill -9.
    Either way the next mount must write the content back from the
    journal: every file arrives byte for byte, none in .failed/.  A file
    above the inline size goes the fsync way to its data file and is left
    alone."""
    dest = sfs.add_dest("local")
    sfs.set_spool(settle="5s")          # the uploads wait: all stay queued
    sfs.mount(env={**os.environ, "SPOOLFS_MEM_FILES": "0"}
              if where == "disk" else None)
    files = {
        "a.xmp": pseudo_random(1000, 51),
        "sub/b.txt": pseudo_random(INLINE_MAX, 52),     # the largest inlined
        "empty": b"",
        "c.jpg": pseudo_random(INLINE_MAX + 1, 53),     # fsynced, not inlined
    }
    for rel, data in files.items():
        write_file(sfs.m("local", rel), data)           # close() returned
    assert sfs.pending() and count_files(dest) == 0, \
        "premise: settle = 5s keeps every upload back"
    sfs.kill9()
    sfs.cleanup_dead_mount()

    ids = data_ids_by_size(sfs)
    spool = sfs.data_dir()
    if where == "memory":
        assert set(ids) == {INLINE_MAX + 1}, \
            f"only the big file has a data file: {ids}"
    else:
        assert set(ids) == {1000, INLINE_MAX, 0, INLINE_MAX + 1}, ids
        os.truncate(spool / ids[1000], 0)                # never written back
        os.rename(spool / ids[1000], spool / "free.7")   # nor renamed
        (spool / ids[INLINE_MAX]).write_bytes(bytes(INLINE_MAX))  # zeros
        os.unlink(spool / ids[0])                        # never created

    sfs.set_spool(settle="0")
    sfs.mount()
    sfs.wait_uploaded(*(sfs.m("local", rel) for rel in files), timeout=60)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert sfs.failed() == []
    assert "3 small files written back from the journal" in sfs.log(), \
        sfs.log_tail()
    sfs.wait_spool_empty()


@pytest.mark.allow_log(r"small files written back from the journal")
def test_fsync_never_small_files_survive_a_killed_daemon(sfs):
    """With fsync = never a new small file's content also lives in memory
    until it is uploaded; its copy in the journal (not fsynced) is what
    outlives a kill -9, as the rest of the journal does.  Every closed
    file arrives byte for byte after the remount, none in .failed/."""
    dest = sfs.add_dest("local")
    sfs.set_spool(settle="5s", fsync="never")
    sfs.mount()
    files = {f"d/f{i}.bin": pseudo_random(500 + 4000 * i, 70 + i)
             for i in range(6)}
    for rel, data in files.items():
        write_file(sfs.m("local", rel), data)
    assert sfs.pending() and count_files(dest) == 0, \
        "premise: settle = 5s keeps every upload back"
    assert not data_ids_by_size(sfs), "premise: the contents are in memory"
    sfs.kill9()
    sfs.cleanup_dead_mount()

    sfs.set_spool(settle="0", fsync="never")
    sfs.mount()
    sfs.wait_uploaded(*(sfs.m("local", rel) for rel in files), timeout=60)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert sfs.failed() == []
    assert f"{len(files)} small files written back from the journal" in \
        sfs.log(), sfs.log_tail()


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_an_append_to_a_small_file_fsyncs_its_data_file_first(sfs, where):
    """A small file committed inline, then appended to: once the journal
    says "writing", the next mount takes the data file as it is (and the
    inline copy is dropped), so the data file must be on disk before its
    first byte changes, or a power cut could lose the bytes its close()
    acknowledged.  A file in memory (memory) is first written to its data
    file; with memory files off (disk) the data file is there already.
    The order of the daemon's system calls is checked: an fdatasync of the
    data file by the thread that then changes it."""
    dest = sfs.add_dest("local")
    sfs.set_spool(settle="5s")
    sfs.mount(env={**os.environ, "SPOOLFS_MEM_FILES": "0"}
              if where == "disk" else None)
    f = sfs.m("local", "notes.txt")
    old = pseudo_random(3000, 61)
    f.write_bytes(old)
    assert sfs.state(f) == "queued"
    in_memory = not [n for n in os.listdir(sfs.data_dir()) if n.isdigit()]
    assert in_memory == (where == "memory")

    def append():
        with open(f, "ab") as fh:
            fh.write(b"appended")

    lines, _, data_id = trace_rewrite(sfs, append)
    assert synced_before_change(lines, data_id, lambda fd, fds: fd in fds,
                                copied=len(old) if in_memory else 0), \
        "changed before an fsync:\n" + "\n".join(lines[-40:])
    sfs.wait_uploaded(f, timeout=30)
    assert (dest / "notes.txt").read_bytes() == old + b"appended"
