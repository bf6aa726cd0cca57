"""Every code block of README.md runs as pasted: the Python blocks one by one in a fresh namespace, and the
`featzoo ...` / `python -c ...` command lines of the bash blocks in order (install and test-suite commands
excepted), from a folder holding a copy of samples/ and configs/, as a new user would run them from the clone.
A summary the README shows in a comment (`# featzoo extract: 3 new, ...`) must be what the command prints."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
from typing import List, Tuple

import pytest

from featzoo import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Commands a test cannot or should not run: installing packages, the test suite itself.
SKIPPED = (('pip',), ('python', '-m', 'pytest'))


def readme_blocks() -> List[Tuple[str, int, str]]:
    """(language, line number, text) of every fenced block of README.md."""
    blocks, language, start, lines = [], None, 0, []
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as fh:
        for number, line in enumerate(fh, start=1):
            fence = re.match(r'^```(\w*)\s*$', line)
            if fence and language is None:
                language, start, lines = fence.group(1) or 'text', number, []
            elif fence:
                blocks.append((language, start, ''.join(lines)))
                language = None
            elif language is not None:
                lines.append(line)
    return blocks


def commands(text: str) -> List[Tuple[str, str]]:
    """(command, comment) for every command of a bash block: lines joined at a trailing backslash, split at `&&`;
    the comment is what follows ` # ` on the line (given to the last command of the line)."""
    out = []
    for line in text.replace('\\\n', ' ').splitlines():
        mark = re.search(r'\s+#\s', line)
        code, comment = (line[:mark.start()], line[mark.end():]) if mark else (line, '')
        parts = [p.strip() for p in code.split('&&') if p.strip()]
        for i, part in enumerate(parts):
            out.append((part, comment.strip() if i == len(parts) - 1 else ''))
    return out


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """A folder like the clone's root: samples/ and configs/, nothing written yet."""
    root = tmp_path_factory.mktemp('readme')
    shutil.copytree(os.path.join(REPO, 'samples'), root / 'samples')
    shutil.copytree(os.path.join(REPO, 'configs'), root / 'configs')
    return root


def test_readme_has_the_blocks_this_test_runs():
    blocks = readme_blocks()
    python = [b for b in blocks if b[0] == 'python']
    runnable = [c for b in blocks if b[0] == 'bash' for c, _ in commands(b[2])
                if not any(tuple(shlex.split(c)[:len(s)]) == s for s in SKIPPED)]
    assert len(python) >= 9 and sum(c.startswith('featzoo ') for c in runnable) >= 6, (len(python), runnable)
    assert all(b[0] in ('python', 'bash', 'text') for b in blocks), [b[:2] for b in blocks]


def test_every_readme_command_runs_as_pasted(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # a command that needs the network fails instead of downloading
    for language, line, text in readme_blocks():
        if language != 'bash':
            continue
        for command, comment in commands(text):
            argv = shlex.split(command)
            if any(tuple(argv[:len(s)]) == s for s in SKIPPED):
                continue
            where = f'README.md line {line}: {command}'
            if argv[0] == 'featzoo':
                try:
                    status = cli.main(argv[1:])
                except SystemExit as exc:
                    status = exc.code
                out, err = capsys.readouterr()
                assert status == 0, f'{where}\n{err[-3000:]}'
                if comment.startswith('featzoo '):
                    promised = comment.split('...')[0].strip().rstrip(',')
                    assert promised in err, f'{where}: the README promises {promised!r}, the command said {err!r}'
            elif argv[:2] == ['python', '-c']:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(argv[2], where, 'exec'), {'__name__': '__main__'})
            else:  # mkdir, cp: the shell's own work, globs included
                done = subprocess.run(command, shell=True, cwd=workdir, capture_output=True, text=True)
                assert done.returncode == 0, f'{where}\n{done.stderr}'


def test_every_readme_python_block_runs_as_pasted(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    os.makedirs('out', exist_ok=True)
    for language, line, text in readme_blocks():
        if language == 'python':
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(text, f'README.md, the block at line {line}', 'exec'), {'__name__': '__main__'})


def test_the_extract_synopsis_names_every_option():
    """The README's `featzoo extract` synopsis lists every option the command takes (one spelling of each)."""
    synopsis = next(text for language, _, text in readme_blocks()
                    if text.startswith('featzoo extract MODEL IMAGES -o OUT'))
    parser = cli._subparser(cli.build_parser(), 'extract')
    missing = [action.option_strings for action in parser._actions
               if action.option_strings and action.dest != 'help'
               and not any(re.search(rf'(^|[\s\[|]){re.escape(s)}(?=[\s\]|])', synopsis)
                           for s in action.option_strings)]
    assert not missing, f'options missing from the README synopsis: {missing}'


def test_the_quickstart_installs_a_cpu_only_torch_first_and_says_how_big_each_choice_is():
    """On a CPU-only machine `pip install -e .` alone pulls the CUDA build (gigabytes of NVIDIA libraries): the
    Quickstart's first block installs the CPU build before featzoo, and the text gives both sizes."""
    text = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    quickstart = text[text.index('## Quickstart'):text.index('## Embeddings from a folder')]
    first = next(b for language, _, b in readme_blocks() if language == 'bash' and b in quickstart)
    lines = [c for c, _ in commands(first)]
    cpu = next((i for i, c in enumerate(lines) if 'download.pytorch.org/whl/cpu' in c and c.startswith('pip install')),
               None)
    assert cpu is not None and 'pip install -e .' in lines and cpu < lines.index('pip install -e .'), lines
    prose = ' '.join(quickstart.split())
    assert re.search(r'CUDA build[^.]*about [\d.]+ GB installed', prose), prose[:600]
    assert re.search(r'CPU build is about [\d.]+ GB to download and under [\d.]+ GB installed', prose), prose[:600]
