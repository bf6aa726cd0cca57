"""The public namespace: every exported name resolves, and importing featzoo stays light."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

import featzoo


@pytest.mark.parametrize('name', featzoo.__all__)
def test_every_public_name_resolves(name):
    assert getattr(featzoo, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match='no_such_thing'):
        featzoo.no_such_thing


def test_import_is_lazy():
    code = ('import sys, featzoo; '
            'print(sorted(m for m in sys.modules if m.startswith(("featzoo.", "timm", "torchvision"))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


def test_package_never_imports_the_oracles():
    root = pathlib.Path(featzoo.__file__).parent
    pattern = re.compile(r'^\s*(import|from)\s+(timm|torchvision)\b', re.M)
    offenders = [str(p) for p in root.rglob('*.py') if pattern.search(p.read_text(encoding='utf-8'))]
    assert not offenders


def test_import_works_beside_a_folder_named_featzoo(tmp_path):
    """From the folder that holds a clone (a `featzoo/` directory without __init__.py in the working directory),
    `import featzoo` and `python -m featzoo` still get the installed package, not an empty namespace package."""
    (tmp_path / 'featzoo').mkdir()
    code = 'import featzoo; print(featzoo.__file__, featzoo.__version__, callable(featzoo.extract_embeddings))'
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [featzoo.__file__, featzoo.__version__, 'True']
    done = subprocess.run([sys.executable, '-m', 'featzoo', '--version'], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f'featzoo {featzoo.__version__}', done.stderr[-2000:]
