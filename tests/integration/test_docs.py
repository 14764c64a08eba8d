"""The man page and the examples keep up with the code.

- docs/spoolfs.1 renders with groff without a warning (skipped without groff);
- every key the config parser accepts (read from the key tables in
  common/config.c) is described in the man page and used in
  examples/spoolfs.conf;
- every xattr spool/spool.c serves is in the man page;
- every subcommand and option that `spoolfs --help` lists is in the man page.

No mount, no server: this runs in well under a second.
"""

import re
import shutil
import subprocess

import pytest

from spoolfs_harness import REPO, spoolfs_bin

MAN = REPO / "docs" / "spoolfs.1"
EXAMPLE_CONF = REPO / "examples" / "spoolfs.conf"


def man_source() -> str:
    return MAN.read_text()


def config_keys() -> dict[str, list[str]]:
    """{"spool": [...], "dest": [...]} from the key_desc tables in config.c."""
    src = (REPO / "common" / "config.c").read_text()
    keys = {}
    for section in ("spool", "dest"):
        m = re.search(r"static const struct key_desc %s_keys\[\] = \{(.*?)\n\};"
                      % section, src, re.S)
        assert m, f"no {section}_keys table in common/config.c"
        keys[section] = re.findall(r'\{\s*"([a-z_]+)",\s*KEY_', m.group(1))
    assert len(keys["spool"]) >= 4 and len(keys["dest"]) >= 20, keys
    return keys


def help_text() -> str:
    binary = spoolfs_bin()
    if not binary.exists():
        pytest.skip(f"{binary} not built (meson setup build && ninja -C build)")
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_man_page_renders_without_warnings():
    if not shutil.which("groff"):
        pytest.skip("groff not installed (scripts/install-deps --test)")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_man_page_describes_every_config_key():
    src = man_source()
    lines = src.splitlines()
    # a key is described when it is the tag of a .TP paragraph
    tags = {re.sub(r"\\-", "-", lines[i + 1]).split()[1]
            for i, line in enumerate(lines[:-1])
            if line == ".TP" and re.match(r"\.(B|BI|BR) ", lines[i + 1])}
    for section, names in config_keys().items():
        for name in names:
            assert name in tags, (f"[{section}] key '{name}' is not described "
                                  f"(.TP / .BI {name} ...) in {MAN}")
    assert ".SS [spool]" in src and ".SS [dest NAME]" in src


def test_example_config_uses_every_key():
    text = EXAMPLE_CONF.read_text()
    # "key = value", or commented out as "; key = value" (secrets, pins)
    used = set(re.findall(r"^[;#]?\s*([a-z_]+)\s*=", text, re.M))
    missing = [n for names in config_keys().values() for n in names
               if n not in used]
    assert not missing, f"keys not in {EXAMPLE_CONF}: {missing}"


def test_man_page_lists_every_xattr():
    src = (REPO / "spool" / "spool.c").read_text()
    names = set(re.findall(r'"(user\.spoolfs\.[a-z_]+)"', src))
    assert len(names) >= 6, names
    man = man_source()
    for name in sorted(names):
        assert re.search(r"^\.B %s$" % re.escape(name), man, re.M), \
            f"xattr {name} is not described in {MAN}"


def test_man_page_covers_help():
    text = help_text()
    man = man_source()
    # subcommands: "spoolfs WORD" in the usage lines
    subcommands = set(re.findall(r"^\s*(?:usage: )?spoolfs ([a-z]+)\b", text,
                                 re.M))
    assert "check" in subcommands, text
    for sub in sorted(subcommands):
        assert f'.SY "spoolfs {sub}"' in man, \
            f"subcommand '{sub}' is not in the SYNOPSIS of {MAN}"
        assert re.search(r"^\.TP\n\.B %s\b" % sub, man, re.M), \
            f"subcommand '{sub}' is not described under COMMANDS in {MAN}"
    # options and flags: -f, --json, ...
    options = set(re.findall(r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]+)\b", text))
    assert {"-f", "-d", "-o", "--help", "--version"} <= options, options
    for opt in sorted(options):
        assert opt.replace("-", r"\-") in man, \
            f"option '{opt}' of spoolfs --help is not in {MAN}"
