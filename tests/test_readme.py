"""Every command in the README's shell blocks names a script that exists and flags that script accepts.

The commands themselves run elsewhere (the demo in tests/test_demo.py, installation and pytest in CI,
the rest need datasets); this catches a README that drifts away from the code.
"""
from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOT_OURS = {"pip", "pytest", "tensorboard"}


def readme_commands() -> list[tuple[Path, list[str]]]:
    """(working directory, argv) of every command in the README's ```bash blocks, `cd` applied."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        cwd = ROOT
        for line in block.splitlines():
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


@functools.lru_cache(maxsize=None)
def help_text(script: Path) -> str:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} --help failed:\n{done.stderr}"
    return done.stdout


COMMANDS = readme_commands()


def test_readme_has_the_three_entry_commands():
    text = README.read_text()
    for command in ("pip install -r requirements.txt", "python classification/eval/validate.py --demo", "\npytest"):
        assert command in text


@pytest.mark.parametrize("cwd, argv", COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_readme_command_matches_its_script(cwd, argv):
    script, flags = script_and_flags(argv)
    path = (cwd / script).resolve()
    assert path.is_file(), f"README runs {script} from {cwd.relative_to(ROOT)}, which does not exist"
    text = help_text(path)
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b", text), f"{script} has no flag {flag}"
