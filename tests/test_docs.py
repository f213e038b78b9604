"""Every CLI command is documented in the README; the README opens with the two set-up commands."""

from pathlib import Path

import typer.main

from tunewright.cli.main import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group, prefix=""):
    for name, command in getattr(group, "commands", {}).items():
        full = f"{prefix}{name}"
        if hasattr(command, "commands"):
            yield from _commands(command, full + " ")
        else:
            yield full


def test_every_command_is_in_the_readme():
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 10
    missing = [c for c in commands if f"tunewright {c}" not in README and not any(
        f"tunewright {c.rsplit(' ', 1)[0]} " in line and c.rsplit(" ", 1)[-1] in line for line in README.splitlines())]
    assert missing == []


def test_readme_opens_with_make_demo_and_make_test():
    block = README.split("```", 2)[1]
    assert "make demo" in block and "make test" in block
