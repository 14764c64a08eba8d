"""Real copy tools into the mount: cp -r, cp -a, rsync -a, tar x, a 1 GiB
file, 2000 small files.  Every test compares the destination byte for byte
with the source and checks nothing else (temp files) is there."""

import os
import re
import time

import pytest

from spoolfs_harness import (assert_same_files, make_big_file, make_flat_tree,
                             pseudo_random, run, sha256, write_file)

ODD_NAMES = [
    "with space.txt", " leading space", "trailing space ", "ünïcödé-日本語.txt",
    "emoji-😀.jpg", "hash#tag", "100%.txt", "%41%2F%00", "quote'single",
    'quote"double', "-leading-dash", "--", "back\\slash", "star*?[x]",
    "semi;colon&amp$dollar`tick`", "tab\tname", "~tilde", ".hidden", "..dots",
    "a" * 255, "é" * 127 + "x", "ends.with.part", "a.spoolfs", "CAPS.TXT",
    "caps.txt",
]


def make_odd_tree(root):
    """Files with awkward names, nested awkward dirs, a 0-byte file."""
    for i, n in enumerate(ODD_NAMES):
        write_file(root / n, pseudo_random(1000 + 37 * i, i), mtime=1_400_000_000 + i)
    deep = root / "dir with space" / "ß#%'\"" / "-x" / ("d" * 255)
    for i, n in enumerate(ODD_NAMES[:8] + ["b" * 255]):
        write_file(deep / n, pseudo_random(500 + i, 100 + i))
    write_file(root / "empty-0-bytes", b"")
    write_file(deep / "empty", b"")
    (root / "empty dir").mkdir()
    return root





def test_cp_r_odd_names_and_empty_file(mounted):
    src = make_odd_tree(mounted.src / "tree")
    run(["cp", "-r", src, mounted.m("local")])
    mounted.wait_uploaded(files_under=mounted.m("local", "tree"))
    assert_same_files(mounted.src, mounted.dest_dir())
    assert (mounted.dest_dir() / "tree/empty-0-bytes").stat().st_size == 0
    mounted.wait_spool_empty()
    # read back through the mount: content comes back from the destination
    assert_same_files(src, mounted.m("local", "tree"))
    assert sorted(os.listdir(mounted.m("local", "tree"))) == sorted(os.listdir(src))


def test_cp_a_keeps_mtimes_and_modes(mounted):
    src = make_odd_tree(mounted.src / "tree")
    for i, p in enumerate(sorted(q for q in src.rglob("*") if q.is_file())):
        p.chmod([0o600, 0o644, 0o755, 0o640][i % 4])
    run(["cp", "-a", src, mounted.m("local")])
    # what the mount shows right away, and again after upload
    assert_same_files(src, mounted.m("local", "tree"), mtime=True, mode=True)
    mounted.wait_uploaded(files_under=mounted.m("local", "tree"))
    assert_same_files(mounted.src, mounted.dest_dir(), mtime=True)
    mounted.wait_spool_empty()
    assert_same_files(src, mounted.m("local", "tree"), mtime=True, mode=True)


def _transferred(stats: str) -> int:
    m = re.search(r"Number of regular files transferred: ([\d,]+)", stats)
    assert m, stats
    return int(m.group(1).replace(",", ""))


def test_rsync_a_twice_transfers_nothing_the_second_time(mounted):
    src = mounted.src / "photos"
    make_flat_tree(src, 300, 3000, dirs=6)
    make_odd_tree(src / "odd")
    nfiles = sum(1 for p in src.rglob("*") if p.is_file())
    target = mounted.m("local", "photos")
    first = run(["rsync", "-a", "--stats", f"{src}/", f"{target}/"]).stdout
    assert _transferred(first) == nfiles
    mounted.wait_uploaded(files_under=target, timeout=120)
    # rsync writes ".name.XXXXXX" and renames: only final names may land
    mounted.wait_dest_matches(mounted.src, mtime=True)
    mounted.wait_spool_empty()
    uploads = len(mounted.uploaded_lines())
    second = run(["rsync", "-a", "--stats", f"{src}/", f"{target}/"]).stdout
    assert _transferred(second) == 0, second
    assert_same_files(mounted.src, mounted.dest_dir(), mtime=True)
    assert len(mounted.uploaded_lines()) == uploads, "second rsync uploaded again"
    assert mounted.data_files() == []


def test_tar_x_into_the_mount(mounted):
    src = mounted.src / "rel"
    make_flat_tree(src, 50, 20_000, dirs=5, seed=3)
    make_odd_tree(src / "odd")
    tarball = mounted.root / "rel.tar"
    run(["tar", "cf", tarball, "-C", mounted.src, "rel"])
    run(["tar", "xf", tarball, "-C", mounted.m("local")])
    mounted.wait_uploaded(files_under=mounted.m("local", "rel"))
    assert_same_files(mounted.src, mounted.dest_dir(), mtime=True)
    mounted.wait_spool_empty()


def test_2000_small_files(mounted):
    src = make_flat_tree(mounted.src / "many", 2000, 4096, dirs=20, seed=5)
    t0 = time.monotonic()
    run(["cp", "-r", src, mounted.m("local")])
    t_cp = time.monotonic() - t0
    mounted.wait_uploaded(files_under=mounted.m("local", "many"), timeout=180)
    t_up = time.monotonic() - t0
    print(f"cp -r of 2000 x 4 KiB: {t_cp:.2f}s; all uploaded after {t_up:.2f}s")
    assert_same_files(mounted.src, mounted.dest_dir(), mtime=False)
    mounted.wait_spool_empty()
    assert mounted.pending() == [] and mounted.failed() == []


@pytest.mark.big
def test_1gib_file(mounted):
    size = 1 << 30
    src = mounted.src / "big.bin"
    dest = mounted.dest_dir() / "big.bin"
    try:
        digest = make_big_file(src, size)
        t0 = time.monotonic()
        run(["cp", src, mounted.m("local")], timeout=300)
        t_cp = time.monotonic() - t0
        p = mounted.m("local", "big.bin")
        assert os.stat(p).st_size == size
        mounted.wait_uploaded(p, timeout=300)
        t_up = time.monotonic() - t0
        print(f"cp of 1 GiB: {t_cp:.1f}s ({size / t_cp / 1e6:.0f} MB/s); "
              f"uploaded after {t_up:.1f}s")
        assert dest.stat().st_size == size
        assert sha256(dest) == digest
        assert_same_files(mounted.src, mounted.dest_dir())
        mounted.wait_spool_empty(timeout=60)
    finally:
        for f in (src, dest):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
