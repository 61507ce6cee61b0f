"""The `ferkit` command as users run it: help everywhere, version, data stats on the real data."""

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from ferkit import __version__
from ferkit.cli import main


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", list(_commands(main)), ids=" ".join)
def test_every_subcommand_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_version():
    out = subprocess.run([sys.executable, "-m", "ferkit.cli", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_data_stats_fer2013_prints_source_counts(fer2013, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ferkit.cli", "data", "stats", str(fer2013), "--json",
                          str(tmp_path / "s.json")], capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["class"] == ["Training", "PublicTest", "PrivateTest", "total"]
    assert lines["disgust"] == ["436", "56", "55", "547"]
    assert lines["total"] == ["28709", "3589", "3589", "35887"]
    assert "unreadable: 0" in out
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["sizes"] == {"48x48": 35887} and stats["modes"] == {"L": 35887}


def test_data_stats_ferplus_prints_protocols(ferplus):
    result = CliRunner().invoke(main, ["data", "stats", str(ferplus), "--no-check"])
    assert result.exit_code == 0, result.output
    assert "FER+ majority: included" in result.output and "no majority label" in result.output


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    result = subprocess.run([sys.executable, "-m", "ferkit.cli", "data", "stats", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("ferkit: error:") and result.stderr.strip().count("\n") == 0
