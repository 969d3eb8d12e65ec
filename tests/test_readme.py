"""Every command in the README's code blocks runs as written from the repository root
after the two setup commands (``tests/readme_commands.py`` says how each is checked), so
the README cannot drift from the tools."""
import os.path as osp
import re
from typing import List

import pytest
from readme_commands import (REPO, check_command, check_make, fenced_blocks,
                             readme_commands, readme_text)


@pytest.mark.parametrize('command', readme_commands(), ids=lambda c: c[:90])
def test_readme_command_runs_as_written(command):
    check_command(command)


def test_every_code_block_says_its_language():
    """Shell blocks are checked here: a fenced block without a language, or a command
    in an indented block, would escape the check."""
    text = readme_text()
    for language, body in fenced_blocks(text):
        assert language, f'a README code block has no language:\n{body[:200]}'
    assert len(readme_commands()) >= 10
    outside = re.sub(r'^```.*?^```', '', text, flags=re.M | re.S)
    indented = re.findall(r'^(?: {4}|\t)+(?:\.venv/|tools/|make |python |bash ).*',
                          outside, flags=re.M)
    assert not indented, f'commands outside fenced shell blocks: {indented}'


def test_no_placeholders_in_commands():
    """Commands are pasted as they are: no ``[--optional]`` brackets or ``CONFIG``
    placeholders in the shell blocks."""
    for command in readme_commands():
        assert not re.search(r'\[-|\b[A-Z]{3,}\b(?!=)', command.split('#')[0]), command


def test_paths_named_in_the_text_exist():
    """Every ``configs/...py`` and ``tools/...`` path the README names exists, and every
    `make TARGET` it mentions is a target."""
    text = readme_text()
    named = r'(?<![\w/])((?:configs|tools|docs)/[\w./{},-]+\.(?:py|sh|md|png))'
    for path in set(re.findall(named, text)):
        for expanded in expand_braces(path):
            assert osp.isfile(osp.join(REPO, expanded)), f'no {expanded} (README names it)'
    for target in set(re.findall(r'`make ([\w-]+)`', text)):
        check_make(['make', target])


def expand_braces(path: str) -> List[str]:
    """``a_{x,y}_b`` -> ``a_x_b``, ``a_y_b`` (one level)."""
    match = re.search(r'\{([^{}]*)\}', path)
    if not match:
        return [path]
    return [path[:match.start()] + option + path[match.end():]
            for option in match.group(1).split(',')]
