"""The README, run as a new user runs it: every command and Python example, in a virtual environment made by
exactly the README's install line (`pip install ".[faces]"` from a copy of this checkout), so the README cannot
drift from the code or promise what that install does not have.

One environment is built per test session (about a minute: pip resolves from the local mirrors and its cache) and
shared by every check here. Skipped, each with its reason: the test command (it is what runs this file), commands
that need the `train` extra (the README installs it separately) and, when ../shared is absent, commands that read
the shared data. Deselect with `-m "not readme"` for a quick local run; CI runs it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PHOTOS, REPO, SHARED

pytestmark = pytest.mark.readme

README = REPO / "README.md"
INSTALL = 'pip install ".[faces]"'
"""The README's install line for users; the environment below is made by running exactly the README's line."""

PHOTO = "dlib__2008_001322.jpg"
"""The real photo that stands in for the README's `photo.jpg` (three faces)."""


@dataclass
class Block:
    lang: str
    text: str
    test_command: bool


def readme_blocks() -> list[Block]:
    """Fenced code blocks of README.md, in order; ``test_command`` marks the one after <!-- test-command -->."""
    blocks, lines = [], README.read_text().splitlines()
    i, marked = 0, False
    while i < len(lines):
        line = lines[i]
        if line.strip() == "<!-- test-command -->":
            marked = True
        m = re.match(r"^```(\w*)\s*$", line)
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(m.group(1), "\n".join(lines[i + 1:end]), marked))
            marked = False
            i = end
        i += 1
    return blocks


def readme_commands() -> list[tuple[str, str | None]]:
    """(command line, reason to skip it or None) for every line of every bash block, comments dropped."""
    out = []
    for block in readme_blocks():
        if block.lang != "bash":
            continue
        for line in block.text.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if not command or command.startswith("#"):
                continue
            if block.test_command:
                reason = "the README's test command: .ci/run runs it, and it runs this file"
            elif re.search(r"ferkit (train|export)\b|\[[^\]]*train", command):
                reason = "needs the train extra, which the README's install line does not install"
            elif (extras := re.search(r'pip install[^"]*"\.\[([^\]]*)\]"', command)) and extras.group(1) != "faces":
                reason = f"installs extras beyond the README's install line ({extras.group(1)}); their tests cover them"
            elif re.search(r"--engine ray\b", command):
                reason = "needs the ray extra, which the README's install line does not install (test_scale_*.py)"
            elif re.search(r"ferkit explain\b", command):
                reason = "needs the explain extra, which the README's install line does not install (test_explain.py)"
            elif re.search(r"ferkit serve\b", command):
                reason = "starts a server that runs until Ctrl-C (tests/test_serve*.py run it)"
            else:
                reason = None
            out.append((command, reason))
    return out


def _clean_env(venv: Path) -> dict[str, str]:
    """The user's shell after `source venv/bin/activate`: this checkout's src is not on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@dataclass
class ReadmeEnv:
    root: Path
    """Holds checkout/ (a copy of this repo) and, when the shared data exists, shared -> the shared folder."""
    venv: Path
    env: dict[str, str]

    @property
    def checkout(self) -> Path:
        return self.root / "checkout"

    def run(self, command: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f"set -euo pipefail; {command}"], cwd=cwd or self.checkout,
                              env=self.env, capture_output=True, text=True, timeout=timeout)


def _copy_checkout(dest: Path) -> None:
    """The files a clone has (tracked, plus new files git does not ignore), as they are in the working tree."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): copy all but the build junk
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", "*venv*", "runs", "__pycache__", "*.egg-info"))
        return
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="session")
def readme_env(tmp_path_factory) -> ReadmeEnv:
    """A fresh venv where exactly the README's install line ran, in a fresh copy of this checkout."""
    first = readme_blocks()[0]
    assert first.lang == "bash" and first.text.startswith(INSTALL + " "), (
        f"the README's first command must start with its install line {INSTALL!r}, not {first.text!r}")
    root = tmp_path_factory.mktemp("readme")
    _copy_checkout(root / "checkout")
    if SHARED.exists():
        (root / "shared").symlink_to(SHARED, target_is_directory=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = ReadmeEnv(root, venv, _clean_env(venv))
    done = env.run(INSTALL, timeout=900)
    assert done.returncode == 0, f"{INSTALL} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return env


def _with_photo(env: ReadmeEnv) -> Path:
    """The checkout copy with a real photo as the README's photo.jpg (skips without the shared photos)."""
    photo = PHOTOS / PHOTO
    if not photo.exists():
        pytest.skip(f"needs {photo} as the README's photo.jpg (the shared data, ../shared next to the repo)")
    shutil.copy(photo, env.checkout / "photo.jpg")
    return env.checkout


COMMANDS = readme_commands()


@pytest.mark.parametrize("command,skip_reason", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_readme_command(readme_env, command, skip_reason):
    if skip_reason:
        pytest.skip(skip_reason)
    if "../shared" in command and not (readme_env.root / "shared").exists():
        pytest.skip(f"reads ../shared, absent here ({SHARED})")
    if "photo.jpg" in command:
        _with_photo(readme_env)
    done = readme_env.run(command)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if "ferkit analyze photo.jpg" in command:
        faces = [line for line in done.stdout.splitlines() if re.search(r"photo\.jpg: face \d+ at x=", line)]
        assert len(faces) == 3 and "photo.jpg: face 0 at x=" in faces[0], done.stdout
    if command.startswith("ferkit analyze ../shared/data/photos --out results/"):
        results = readme_env.checkout / "results"
        assert (results / "results.json").is_file() and (results / "faces.csv").is_file()
        images = [p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        assert len(list((results / "annotated").iterdir())) == len(images)
    if command.startswith("ferkit evaluate") and "--split" not in command:
        assert done.stdout.splitlines()[0].startswith("scored: split PrivateTest of"), done.stdout
    if command.startswith("ferkit models"):
        assert "PrivateTest" in done.stdout and "flip TTA" in done.stdout and "{" not in done.stdout


def test_readme_python_examples(readme_env):
    """Every ```python block runs to the end in the README's install (pandas included: to_dataframe)."""
    examples = [b.text for b in readme_blocks() if b.lang == "python"]
    assert examples, "the README has no Python example"
    cwd = _with_photo(readme_env)
    for i, code in enumerate(examples):
        script = readme_env.root / f"example_{i}.py"
        script.write_text(code + "\n")
        done = readme_env.run(f"python {shlex.quote(str(script))}", cwd=cwd)
        assert done.returncode == 0, f"README Python example {i} failed:\n{code}\n{done.stderr[-3000:]}"
        assert "emotion" in done.stdout or "happy" in done.stdout or "neutral" in done.stdout, done.stdout


def test_readme_command_table_names_real_commands(readme_env):
    """Each `ferkit ...` of the commands table exists in the installed command (its --help works)."""
    table = [m.group(1) for m in re.finditer(r"^\| `ferkit ([a-z ]+?)(?: [A-Z\[].*?)?` \|", README.read_text(), re.M)]
    assert {"analyze", "evaluate", "models", "data stats", "train", "export"} <= set(table), table
    for sub in table:
        done = readme_env.run(f"ferkit {sub} --help")
        assert done.returncode == 0 and "Usage:" in done.stdout, (sub, done.stderr)


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferkit: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("command,extra", [("ferkit train configs/default.yaml --out runs/x", "train"),
                                           ("ferkit export configs --out my-model", "train"),
                                           ("ferkit serve --port 0", "serve"),
                                           ("ferkit analyze --engine ray photos --out results-ray", "ray")])
def test_commands_without_their_extra_say_how_to_install_it(readme_env, command, extra):
    line = _one_line_error(readme_env.run(command))
    assert f'needs the \'{extra}\' extra: pip install "ferkit[{extra}]"' in line
    if extra == "train":  # the form the README's Training section uses
        assert 'pip install -e ".[train]"' in line and 'pip install -e ".[train]"' in README.read_text()


def test_mediapipe_without_its_extra_names_the_readme_install(readme_env):
    cwd = _with_photo(readme_env)
    line = _one_line_error(readme_env.run("ferkit analyze photo.jpg --detector mediapipe", cwd=cwd))
    assert 'pip install "ferkit[mediapipe]"' in line and 'pip install "ferkit[mediapipe]"' in README.read_text()


def test_train_extra_not_installed_by_the_readme_line(readme_env):
    """The premise of the skips above: the README's install line does not bring torch."""
    done = readme_env.run('python -c "import torch"')
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr
