"""Fixtures shared by the test files."""

import pytest

from polydiff.core.cli import main


@pytest.fixture
def cli_error(capsys):
    """``cli_error(args)``: run the CLI, expect exit status 2 and return the single line of stderr (asserting that the
    whole of stderr is that one ``polydiff: error:`` line, without a traceback)."""

    def run(args: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        lines = err.splitlines()
        assert len(lines) == 1, f"stderr is {len(lines)} lines, not one:\n{err[:2000]}"
        assert lines[0].startswith("polydiff: error:") and "Traceback" not in err
        return lines[0]

    return run
