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
