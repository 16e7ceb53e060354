"""Every command in the READMEs' shell blocks names a script that exists and flags that script accepts.

The top-level README and benchmarks/README.md run from the repository root, the folder READMEs of the
evaluation, training and segmentation from their own folder (as they say) or, for a path that exists only
there, from the root.

The commands themselves run elsewhere (the demo in tests/test_demo.py, installation and pytest in CI,
the rest need datasets); this catches a README that drifts away from the code.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
READMES = {README: ROOT, ROOT / "benchmarks" / "README.md": ROOT,
           **{ROOT / folder / "README.md": ROOT / folder
              for folder in ("classification/eval", "classification/training", "segmentation")}}
NOT_OURS = {"pip", "pytest", "tensorboard"}


def readme_commands() -> list[tuple[Path, list[str]]]:
    """(working directory, argv) of every command in the READMEs' ```bash blocks, `cd` applied."""
    commands = []
    for readme, start in READMES.items():
        commands += commands_of(readme, start)
    return commands


def commands_of(readme: Path, start: Path) -> list[tuple[Path, list[str]]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S):
        cwd = start
        for line in block.replace("\\\n", " ").splitlines():  # a trailing backslash continues the command
            line = line.split("  #", 1)[0].strip()
            if not line:
                continue
            argv = shlex.split(line)
            if argv[0] == "cd":
                cwd = cwd / argv[1]
            elif argv[0] not in NOT_OURS:
                commands.append((cwd, argv))
    return commands


def script_and_flags(argv: list[str]) -> tuple[str, list[str]]:
    if argv[0] == "torchrun":  # torchrun's own options come before the script
        argv = ["python", *argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]]
    assert argv[0] == "python", f"unexpected command {' '.join(argv)}"
    return argv[1], [a.split("=")[0] for a in argv[2:] if a.startswith("--")]


def script_path(cwd: Path, script: str) -> Path:
    """A folder README may also give a command from the root."""
    path = (cwd / script).resolve()
    return path if path.is_file() or cwd == ROOT else (ROOT / script).resolve()


@functools.lru_cache(maxsize=None)
def help_runs() -> dict[Path, subprocess.CompletedProcess]:
    """``--help`` of every script the READMEs run, side by side (each is mostly the interpreter's start-up)."""
    scripts = set()
    for cwd, argv in COMMANDS:
        try:
            scripts.add(script_path(cwd, script_and_flags(argv)[0]))
        except (AssertionError, StopIteration):  # not a Python script: that command's own test says so
            continue
    scripts = sorted(path for path in scripts if path.is_file())

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(scripts, pool.map(run, scripts)))


def help_text(script: Path) -> str:
    done = help_runs()[script]
    assert done.returncode == 0, f"{script} --help failed:\n{done.stderr}"
    return done.stdout


COMMANDS = readme_commands()


def test_readme_has_the_three_entry_commands():
    text = README.read_text()
    for command in ("pip install -r requirements.txt", "python classification/eval/validate.py --demo", "\npytest"):
        assert command in text


def test_every_readme_with_commands_is_checked():
    with_commands = {p for p in ROOT.rglob("README.md") if "```bash" in p.read_text() and ".git" not in p.parts}
    assert with_commands <= set(READMES), f"add {sorted(map(str, with_commands - set(READMES)))} to READMES"


@pytest.mark.parametrize("cwd, argv", COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_readme_command_matches_its_script(cwd, argv):
    script, flags = script_and_flags(argv)
    path = script_path(cwd, script)
    assert path.is_file(), f"README runs {script} from {cwd.relative_to(ROOT)} (or the root), which does not exist"
    text = help_text(path)
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b", text), f"{script} has no flag {flag}"
