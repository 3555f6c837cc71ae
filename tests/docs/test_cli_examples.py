"""Every `wallet-signer` command line in the docs and the README uses commands and flags that
exist: shell blocks are parsed whole by the real argument parser (`signer.cli._parser()`), and
the inline commands of the prose and tables are checked command by command, flag by flag."""

import argparse
import contextlib
import io
import re
import shlex

import pytest

from signer import cli
from tests.support.doc_fences import DOCS, blocks, inline_code, pages

SHELL = ("sh", "console", "bash", "shell")
PROGRAM = "wallet-signer"
# optional parts written as in a usage line: `[--config FILE]` is checked as `--config FILE`
_OPTIONAL = re.compile(r"\[([^\[\]|]*)\]")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    children = _subcommands(parser)
    if not children:
        yield path, parser
    for name, child in children.items():
        yield from _leaves(child, (*path, name))


def _command_lines(text: str) -> list[list[str]]:
    """The argument lists of every `wallet-signer` invocation in a shell block."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if PROGRAM not in line:  # other commands' lines may open a quote the next one closes
            continue
        line = _OPTIONAL.sub(r"\1", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token and set(token) <= set("|&;()<>"):
                words = [w for w in segment if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
                if words and words[0].rpartition("/")[2] == PROGRAM:
                    found.append(words[1:])
                segment = []
            else:
                segment.append(token)
    return found


CASES = [
    pytest.param(args, id=f"{block.where}:{' '.join(args)[:60]}")
    for page in pages(readme=True)
    for block in blocks(page)
    if block.lang in SHELL
    for args in _command_lines(block.text)
]


def test_the_docs_have_command_lines():
    assert len(CASES) >= 10


@pytest.mark.parametrize("args", CASES)
def test_command_line_parses(args: list[str]):
    parser = cli._parser()
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.suppress(SystemExit):
        parser.parse_args(args)
        return
    pytest.fail(f"wallet-signer {' '.join(args)}: {errors.getvalue().strip().splitlines()[-1]}")


INLINE = [
    pytest.param(code, id=f"{page.relative_to(DOCS.parent)}:{code[:60]}")
    for page in pages(readme=True)
    for code in inline_code(page)
    if code.startswith(PROGRAM + " ") and not code.rstrip().endswith(PROGRAM)
]


def test_the_docs_have_inline_commands():
    assert len(INLINE) >= 20


@pytest.mark.parametrize("code", INLINE)
def test_inline_command_and_flags_exist(code: str):
    """Usage-style text (`keys list [--config FILE \\| --server HOST:PORT]`): the command path
    must exist and every flag named must be one of that command's (or a global one)."""
    parser = cli._parser()
    words = code.replace("\\|", " ").replace("[", " ").replace("]", " ").replace("(", " ")
    words = words.replace(")", " ").replace("|", " ").split()[1:]
    command = parser
    flags = _options(parser)
    while words and _subcommands(command):
        name = words.pop(0)
        if name.startswith("-"):  # global options before the command
            assert name.split("=")[0] in flags, f"{code}: no global option {name}"
            continue
        assert name in _subcommands(command), f"{code}: no command {name!r}"
        command = _subcommands(command)[name]
    known = flags | _options(command)
    for word in words:
        if word.startswith("-") and word != "-" and not word.startswith("---"):
            assert word.split("=")[0] in known, f"{code}: {command.prog} has no {word}"


def test_every_command_is_in_the_command_line_reference():
    """The reverse direction: the reference page names every command and every flag."""
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = []
    for path, leaf in _leaves(cli._parser()):
        if f"{PROGRAM} {' '.join(path)}" not in reference:
            missing.append(" ".join(path))
        missing += [f"{' '.join(path)} {flag}" for flag in sorted(_options(leaf))
                    if flag.startswith("--") and flag != "--help" and f"`{flag}" not in reference
                    and f"{flag} " not in reference and f"{flag}]" not in reference]
    assert not missing, missing


def test_a_wrong_flag_would_fail():
    """The checks are not vacuous: a flag the parser lacks is caught in a block and inline."""
    (args,) = _command_lines("wallet-signer keys freeze hot --reson x  # typo\n")
    assert args == ["keys", "freeze", "hot", "--reson", "x"]
    with pytest.raises(pytest.fail.Exception, match="--reson"):
        test_command_line_parses(args)
    with pytest.raises(AssertionError, match="--reson"):
        test_inline_command_and_flags_exist("wallet-signer keys freeze KEY_ID --reson TEXT")
