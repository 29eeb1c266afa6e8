"""The `tfmaskrcnn` command: every sub-command is reachable and documents itself."""

import pytest

from tfmaskrcnn import __version__, cli


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out.lower() or "flags" in out.lower(), out[:500]


def test_version_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
    assert "train" in capsys.readouterr().out  # the help lists the sub-commands
