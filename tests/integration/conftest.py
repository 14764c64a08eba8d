"""pytest fixtures for spoolfs mount tests (see spoolfs_harness.py).

  sfs      a SpoolfsEnv with temp spool/mount/destination dirs, not mounted
           yet: add destinations, tweak [spool], then sfs.mount().
  mounted  sfs with one file:// destination "local", mounted.

Teardown always unmounts (fusermount3 -u, then -uz), stops only the daemon
PIDs the test started, unmounts any tmpfs it made, and fails the test when
the daemon logged an unexpected "spoolfs: warning:"/"spoolfs: error:" line
(allow expected ones with sfs.allow_log(regex) or
@pytest.mark.allow_log(regex, ...)), a sanitizer report, or exited non-zero.
"""

import os

import pytest

from spoolfs_harness import SpoolfsEnv, fuse_unavailable_reason


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_log(*regex): daemon warning/error lines this test expects")
    config.addinivalue_line(
        "markers", "big: needs GBs of disk and a minute (deselect: -m 'not big')")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the daemon's log, so that a failure
    in CI says what the daemon saw (its info lines say why an attempt
    failed, for one)."""
    outcome = yield
    report = outcome.get_result()
    env = getattr(item, "funcargs", {}).get("sfs")
    if report.failed and isinstance(env, SpoolfsEnv) and env.daemons:
        try:
            report.sections.append(("daemon log", env.log_tail(60)))
        except OSError as e:
            report.sections.append(("daemon log", f"unreadable: {e}"))


def _require_mount():
    reason = fuse_unavailable_reason()
    if reason:
        if os.environ.get("SPOOLFS_REQUIRE_FUSE") == "1":
            pytest.fail(reason + " (SPOOLFS_REQUIRE_FUSE=1)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def sfs(tmp_path, request):
    _require_mount()
    env = SpoolfsEnv(tmp_path, request.node.nodeid)
    for mark in request.node.iter_markers("allow_log"):
        env.allow_log(*mark.args)
    yield env
    problems = env.teardown()
    if problems:
        pytest.fail("teardown of " + request.node.nodeid + ":\n"
                    + "\n".join(problems), pytrace=False)


@pytest.fixture
def mounted(sfs):
    sfs.add_dest("local")
    sfs.mount()
    return sfs
