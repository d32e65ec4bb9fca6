"""How every `drum` subcommand reports bad input: exit status 2 and one line on stderr, never a traceback."""


def assert_one_line_error(capsys, command: str, status: int, *expected: str) -> None:
    """`status` is 2 and stderr (read from capsys) is one line "drum <command>: ..." holding every `expected` text."""
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith(f"drum {command}: ") and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
