"""Big files are uploaded while they are still being written (streaming).

Once a file being written at its end has grown past 32 MiB, an idle worker
sends it to the temp on the destination in segments while the writer goes
on; close() then leaves only the tail to send.  What a user relies on: the
temp really grows before close(), and whatever the writer does meanwhile
(rewrite bytes already sent, truncate, pause with the file open, rename,
rm) the destination ends with exactly the bytes close() acknowledged and no
temp is left behind."""

import os
import time

import pytest

from spoolfs_harness import pseudo_random, sha256, wait_until

MiB = 1 << 20


@pytest.fixture
def mounted(sfs):
    """A file:// destination with streaming on (its default is off: a local
    directory shares the writer's disk; network destinations stream)."""
    sfs.add_dest("local", stream="yes")
    sfs.mount()
    return sfs


def temps(root):
    return sorted(p for p in root.rglob("*") if p.name.endswith(".part"))


def wait_temp_grows(env, size, what="the file"):
    """Until a temp on the destination holds >= SIZE bytes: sent while the
    writer still has the file open."""
    dst = env.dest_dir()

    def grown():
        return any(p.stat().st_size >= size for p in temps(dst))
    wait_until(grown, 60, f"a temp of >= {size} bytes for {what} on the "
               "destination while it is still open",
               state=lambda: f"temps: {[(p.name, p.stat().st_size) for p in temps(dst)]}\n"
               + env.log_tail())


def wait_no_temp(dst):
    """A stale temp goes to the trash; a worker removes it."""
    wait_until(lambda: temps(dst) == [], 30, "no temp left",
               state=lambda: str(temps(dst)))


def assert_arrived(env, name, data, stale_temp=True):
    """NAME is uploaded with exactly DATA, and no temp is left behind: with
    STALE_TEMP once a worker removed the one a rewrite made stale, else at
    once (the streamed temp itself became NAME)."""
    env.wait_uploaded(env.m("local", name))
    assert sha256(env.dest_dir() / name) == digest(data)
    if stale_temp:
        wait_no_temp(env.dest_dir())
    else:
        assert temps(env.dest_dir()) == []


def digest(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def test_big_file_is_on_the_destination_while_still_written(mounted):
    data = pseudo_random(80 * MiB, 7)
    path = mounted.m("local", "DSC_0001.NEF")
    with open(path, "wb", buffering=0) as f:
        f.write(data[:40 * MiB])
        wait_temp_grows(mounted, 32 * MiB)
        assert mounted.state(path) == "writing"
        assert int(mounted.xattr(path, "progress")) >= 32 * MiB
        f.write(data[40 * MiB:])
    assert_arrived(mounted, "DSC_0001.NEF", data, stale_temp=False)
    assert mounted.xattr(path, "attempts") == "1"


def test_rewriting_bytes_already_sent_uploads_the_new_content(mounted):
    data = bytearray(pseudo_random(72 * MiB, 8))
    path = mounted.m("local", "rewritten.bin")
    with open(path, "wb", buffering=0) as f:
        f.write(data[:40 * MiB])
        wait_temp_grows(mounted, 32 * MiB)
        # an editor-style patch of the header, then more at the end
        f.seek(1000)
        f.write(b"NEW HEADER" * 100)
        data[1000:1000 + 1000] = b"NEW HEADER" * 100
        f.seek(40 * MiB)
        f.write(data[40 * MiB:])
    # the stale temp goes to the trash and is removed
    assert_arrived(mounted, "rewritten.bin", bytes(data))


def test_truncate_below_what_was_sent(mounted):
    head = pseudo_random(40 * MiB, 9)
    tail = pseudo_random(36 * MiB, 10)
    path = mounted.m("local", "truncated.bin")
    with open(path, "wb", buffering=0) as f:
        f.write(head)
        wait_temp_grows(mounted, 32 * MiB)
        f.truncate(10 * MiB)
        f.seek(10 * MiB)
        f.write(tail)
    assert_arrived(mounted, "truncated.bin", head[:10 * MiB] + tail)


def test_pause_with_the_file_open_then_rewrite(mounted):
    """A file that stops growing is handed back (a worker is not held by an
    idle writer); its temp is resumed after close, unless the writer
    changed bytes the temp already holds."""
    data = bytearray(pseudo_random(48 * MiB, 11))
    path = mounted.m("local", "paused.bin")
    with open(path, "wb", buffering=0) as f:
        f.write(data[:36 * MiB])
        wait_temp_grows(mounted, 32 * MiB)
        # longer than the 2 s a stream waits for more data
        time.sleep(3)
        f.seek(5)
        f.write(b"changed after the pause")
        data[5:5 + 23] = b"changed after the pause"
        f.seek(36 * MiB)
        f.write(data[36 * MiB:])
    assert_arrived(mounted, "paused.bin", bytes(data))


def test_pause_then_append_resumes_the_temp(mounted):
    data = pseudo_random(44 * MiB, 12)
    path = mounted.m("local", "appended.bin")
    with open(path, "wb", buffering=0) as f:
        f.write(data[:36 * MiB])
        wait_temp_grows(mounted, 32 * MiB)
        time.sleep(3)
        f.write(data[36 * MiB:])
    assert_arrived(mounted, "appended.bin", data, stale_temp=False)
    assert "resuming 'appended.bin' at byte" in mounted.log()


def test_rename_and_rm_while_streaming(mounted):
    dst = mounted.dest_dir()
    data = pseudo_random(40 * MiB, 13)
    os.mkdir(mounted.m("local", "import"))
    tmp = mounted.m("local", "import/.IMG_1.CR3.part")
    with open(tmp, "wb", buffering=0) as f:
        f.write(data)
        wait_temp_grows(mounted, 32 * MiB)
    os.rename(tmp, mounted.m("local", "import/IMG_1.CR3"))
    gone = mounted.m("local", "gone.bin")
    with open(gone, "wb", buffering=0) as f:
        f.write(data)
        wait_temp_grows(mounted, 32 * MiB, "gone.bin")
        os.unlink(gone)
    mounted.wait_uploaded(mounted.m("local", "import/IMG_1.CR3"))
    assert sha256(dst / "import/IMG_1.CR3") == digest(data)
    assert not (dst / "import/.IMG_1.CR3.part").exists()
    assert not (dst / "gone.bin").exists()
    wait_no_temp(dst)



def test_a_streamed_file_is_published_without_waiting_for_settle(sfs):
    """`settle` holds an upload back after close() so that a rename or
    touch right after it lands first; a streamed file's upload started long
    before its close, so its commit follows the tail at once instead of
    holding a file that is on the destination already.  A file that was
    not streamed still waits its settle."""
    sfs.set_spool(settle="1h")
    dest = sfs.add_dest("local", stream="yes")
    sfs.mount()
    note = sfs.m("local", "note.txt")
    note.write_bytes(b"not streamed\n")
    data = pseudo_random(40 * MiB + 123, 9)
    path = sfs.m("local", "clip.mov")
    with open(path, "wb", buffering=0) as f:
        f.write(data[:36 * MiB])
        wait_temp_grows(sfs, 32 * MiB)
        f.write(data[36 * MiB:])
    sfs.wait_uploaded(path, timeout=60)
    assert sha256(dest / "clip.mov") == digest(data)
    assert temps(dest) == []
    assert sfs.state(note) == "queued" and not (dest / "note.txt").exists()
