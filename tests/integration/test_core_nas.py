"""A file:// destination on a NAS mount point: with require_mount = yes an
unmounted NAS (an empty directory on the local disk) is not written to; the
file waits in .failed/ and arrives once the NAS is mounted and it is moved
back."""

import subprocess

import pytest

from spoolfs_harness import pseudo_random, run, wait_until


@pytest.mark.allow_log(r"is not a mount point")
def test_require_mount_refuses_an_unmounted_nas(sfs):
    nas = sfs.add_dest("nas", require_mount="yes", retries=1,
                       backoff="10ms..20ms")
    sfs.mount()
    data = pseudo_random(20_000, 41)
    p = sfs.m("nas", "DSC_0001.NEF")
    p.write_bytes(data)
    f = sfs.m("nas", ".failed/DSC_0001.NEF")
    wait_until(f.exists, 20, f"{f} to appear", state=lambda: sfs.describe([p]))
    err = sfs.xattr(f, "error")
    assert "is not a mount point" in err and str(nas) in err, err
    assert list(nas.iterdir()) == [], "nothing may land on the local disk"
    assert f.read_bytes() == data

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs",
                    str(nas)], check=True)
    try:
        run(["mv", f, p])
        sfs.wait_uploaded(p)
        assert (nas / "DSC_0001.NEF").read_bytes() == data
    finally:
        subprocess.run(["umount", "-l", str(nas)], check=False)


def test_two_spools_upload_into_one_folder(sfs, tmp_path):
    """Two machines import into the same NAS folder at once.  Each spool
    numbers its files from 1, so with temp names made of id and generation
    only, both wrote ".spoolfs-1-1.part" there at once and one spool's file
    failed (and could have carried the other's bytes).  Temp names carry a
    random tag per mount."""
    from spoolfs_harness import SpoolfsEnv
    shared = tmp_path / "nas-folder"
    shared.mkdir()
    other = SpoolfsEnv(tmp_path / "laptop-b")
    try:
        envs = (sfs, other)
        for env in envs:
            # slow (past the first second's burst) so that the uploads of
            # the two spools' file N overlap for seconds; one worker each
            env.add_dest("nas", url=f"file://{shared}", max_rate="1M",
                         connections=1)
            env.mount()
        data = {(i, j): pseudo_random(2_000_000 + 7 * j, 10 * i + j)
                for i in range(2) for j in range(2)}
        for j in range(2):
            for i, env in enumerate(envs):
                env.m("nas", f"cam{i}-{j}.jpg").write_bytes(data[i, j])
        for i, env in enumerate(envs):
            for j in range(2):
                env.wait_uploaded(env.m("nas", f"cam{i}-{j}.jpg"), timeout=30)
        for (i, j), d in data.items():
            assert (shared / f"cam{i}-{j}.jpg").read_bytes() == d, (i, j)
        assert sorted(p.name for p in shared.iterdir()) == sorted(
            f"cam{i}-{j}.jpg" for i in range(2) for j in range(2))
        for env in envs:
            env.wait_spool_empty()
    finally:
        problems = other.teardown()
    assert not problems, problems
