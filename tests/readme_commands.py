"""Checks that a shell command of the README (or one a tool prints) runs as written
from the repository root: its program, script, make target and config files exist, and
its arguments parse with the tool's own command line -- in this process, with the
tools' argparse parsers; ``make -n`` for make targets; ``--cfg-options`` keys must exist
in the config. A new kind of command fails until :func:`check_command` learns it."""
import importlib.util
import os.path as osp
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from typing import List, Sequence

import pytest

from greenmim_cli.launch import evaluation_parser, load_config, train_parser

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the repository root
README = osp.join(REPO, 'README.md')
SHELL_LANGUAGES = ('bash', 'sh', 'shell')
VENV_BIN = '.venv/bin/'


def readme_text() -> str:
    with open(README) as f:
        return f.read()


def fenced_blocks(text: str) -> List[tuple]:
    """``(language, body)`` of every ``` block."""
    return re.findall(r'^```(\w*)\n(.*?)^```', text, flags=re.M | re.S)


def shell_commands(body: str) -> List[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r'\\\n\s*', ' ', body)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def readme_commands() -> List[str]:
    return [command for language, body in fenced_blocks(readme_text())
            if language in SHELL_LANGUAGES for command in shell_commands(body)]


# ------------------------------------------------------------------ the tools' parsers
@lru_cache(maxsize=None)
def tool_module(path: str):
    spec = importlib.util.spec_from_file_location(
        'readme_' + osp.splitext(osp.basename(path))[0], osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its main() runs only under __main__
    return module


def parse_with_tool(tool: str, args: Sequence[str]):
    """Parse ``args`` with ``tool``'s command line (its parser, or its
    ``parse_args(argv)``); fail with the parser's message."""
    from greenmim_mm.errors import UsageError

    if tool == 'tools/train.py':
        parse = train_parser().parse_args
    elif tool == 'tools/test.py':
        parse = evaluation_parser().parse_args
    else:
        module = tool_module(tool)
        if hasattr(module, 'build_parser'):
            parse = module.build_parser().parse_args
        elif hasattr(module, 'parse_args'):
            parse = module.parse_args
        else:
            pytest.fail(f'{tool} has neither build_parser() nor parse_args(argv): '
                        'give it one so that the README test can parse its examples')
    try:
        return parse(list(args))
    except (SystemExit, UsageError) as error:
        pytest.fail(f'{tool} does not accept the README\'s arguments {list(args)}: '
                    f'{error}')


def check_config_args(namespace) -> None:
    """The config exists, and its ``--cfg-options`` keys exist in it (every config
    parses: tests/test_configs.py)."""
    config = getattr(namespace, 'config', None)
    if config is None:
        return
    assert osp.isfile(osp.join(REPO, config)), f'no config file {config}'
    if getattr(namespace, 'cfg_options', None):
        load_config(osp.join(REPO, config), namespace.cfg_options)


def check_python(words: List[str]) -> None:
    if words[1:3] == ['-m', 'pytest']:
        return
    tool, args = words[1], words[2:]
    assert tool.startswith('tools/') and osp.isfile(osp.join(REPO, tool)), \
        f'no tool {tool}'
    check_config_args(parse_with_tool(tool, args))


def check_launcher(words: List[str]) -> None:
    """``tools/dist_train.sh CONFIG GPUS ...``, ``tools/dist_test.sh CONFIG CKPT GPUS
    ...``: the script exists and the rest parses as train.py / test.py arguments."""
    script, args = words[0], words[1:]
    assert osp.isfile(osp.join(REPO, script)), f'no script {script}'
    if script == 'tools/dist_train.sh':
        assert args[1].isdigit(), f'GPUS must be a number in {shlex.join(words)}'
        check_config_args(parse_with_tool('tools/train.py', [args[0]] + args[2:]))
    elif script == 'tools/dist_test.sh':
        assert args[2].isdigit(), f'GPUS must be a number in {shlex.join(words)}'
        check_config_args(parse_with_tool('tools/test.py', args[:2] + args[3:]))
    elif script == 'tools/slurm_train.sh':
        check_config_args(parse_with_tool(
            'tools/train.py', [args[2], '--work-dir', args[3]] + args[4:]))
    elif script != 'tools/install.sh':
        pytest.fail(f'the README test does not know {script}: teach check_launcher')


def check_make(words: List[str]) -> None:
    targets = words[1:]
    assert targets, 'a bare `make`: name the target'
    done = subprocess.run(['make', '-n', *targets], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, f'make -n {" ".join(targets)}: {done.stderr}'


def check_venv_program(words: List[str]) -> None:
    """``.venv/bin/tensorboard ...``: the program is in the project's environment."""
    program = osp.join(osp.dirname(sys.executable), words[0][len(VENV_BIN):])
    assert osp.isfile(program), f'{words[0]} is not installed ({program})'
    if words[0].endswith('/tensorboard'):
        assert words[1] == '--logdir' and len(words) == 3, words


# the installed commands (setup.py's entry points) and the scripts they equal
INSTALLED_COMMANDS = {'greenmim-train': 'tools/train.py', 'greenmim-test': 'tools/test.py',
                      'greenmim-visualize': 'tools/visualize_reconstruction.py'}


def check_installed_command(words: List[str]) -> None:
    """``greenmim-train greenmim_mm::pretrain/NAME.py ...``: a command of setup.py, its
    arguments parse as its script's, an installed config name resolves to a config."""
    from greenmim_cli.installed_configs import resolve_config
    setup = open(osp.join(REPO, 'setup.py')).read()
    assert f"'{words[0]} = greenmim_cli.commands:" in setup, f'setup.py has no {words[0]}'
    namespace = parse_with_tool(INSTALLED_COMMANDS[words[0]], words[1:])
    assert osp.isfile(resolve_config(namespace.config)), namespace.config


def check_command(command: str) -> None:
    words = shlex.split(command)
    while words and re.match(r'^\w+=', words[0]):  # VAR=value prefixes
        words = words[1:]
    program = words[0]
    if program == 'make':
        check_make(words)
    elif program == 'bash':
        check_launcher(words[1:])
    elif program.startswith('tools/') and program.endswith('.sh'):
        check_launcher(words)
    elif program == VENV_BIN + 'python':
        check_python(words)
    elif program.startswith(VENV_BIN):
        check_venv_program(words)
    elif program == 'source':
        assert words[1] == VENV_BIN + 'activate', words
    elif program in INSTALLED_COMMANDS:
        check_installed_command(words)
    else:
        pytest.fail(f'README command `{command}` runs {program!r}: from a fresh shell '
                    f'use {VENV_BIN}python (bare python is not the project\'s), a make '
                    'target or a tools/ script; or teach tests/test_readme.py')
