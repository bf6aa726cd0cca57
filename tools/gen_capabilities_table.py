"""Write the README table of per-family output strides, feature wrappers and export paths, from the capabilities.

The table is generated from the static index (``featzoo.model_capabilities``), whose ``export`` field holds what
``tests/test_export.py`` proves for each family, so the README never claims more than the tests verify.

    python tools/gen_capabilities_table.py            # print the block
    python tools/gen_capabilities_table.py --write    # rewrite it in README.md between the markers
    python tools/gen_capabilities_table.py --check    # exit 1 when README.md is out of date

The block sits between ``<!-- capabilities:start -->`` and ``<!-- capabilities:end -->``; ``--write`` adds a
"Capabilities" section before "## Layout" (or at the end) when README.md has no markers yet.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import featzoo  # noqa: E402

START = '<!-- capabilities:start -->'
END = '<!-- capabilities:end -->'
README = os.path.join(ROOT, 'README.md')
_BLOCK = re.compile(re.escape(START) + r'\n(.*?)' + re.escape(END), re.S)

_NOTES = (
    '`torch.export`: every feature level of a `features_only=True` backbone exports with a dynamic batch '
    'dimension; "batch, H, W" means height and width are dynamic too (any multiple of the deepest stride). '
    '`ONNX`: `torch.onnx.export` of that program, outputs named after the features, matching eager within 1e-4 '
    'in onnxruntime; convert attention models under `torch.nn.attention.sdpa_kernel(SDPBackend.MATH)` (torch\'s '
    'fused CPU attention reports strides its ONNX decomposition does not reproduce). `torch.compile`: '
    '`fullgraph=True` (no graph breaks) for every wrapper the family serves.',
)


def _strides(names: Sequence[str]) -> str:
    per_model = {featzoo.model_capabilities(n).output_strides for n in names}
    values = sorted({s for strides in per_model for s in strides})
    text = ', '.join(str(s) for s in values)
    return text if len(per_model) == 1 else f'{text} (one per variant)'


def _wrappers(name: str) -> str:
    caps = featzoo.model_capabilities(name)
    ordered = [caps.default_feature_cls] + [c for c in caps.feature_cls if c != caps.default_feature_cls]
    return ', '.join(f'**{c}**' if c == caps.default_feature_cls else c for c in ordered)


def family_rows() -> List[Tuple[str, ...]]:
    """One row per family: name, model count, output strides, wrappers, torch.export, ONNX, torch.compile.

    >>> family_rows()[0][0] == sorted(featzoo.list_modules())[0]
    True
    """
    rows = []
    for family in featzoo.list_modules():
        names = featzoo.list_models(module=family)
        exports: Dict[str, set] = {}
        for name in names:
            for path in featzoo.model_capabilities(name).export:
                exports.setdefault(path, set()).add(name)
        # a path counts for the family when every variant records it; the few that do not are named
        def column(path: str, text: str) -> str:
            holders = exports.get(path, set())
            if not holders:
                return '—'
            missing = sorted(set(names) - holders)
            return f"{text} (not: {', '.join(missing)})" if missing else text

        dynamic = exports.get('dynamic_hw', set())
        fixed = sorted(set(names) - dynamic)
        dims = 'batch' if not dynamic else f"batch, H, W (batch only: {', '.join(fixed)})" if fixed else 'batch, H, W'
        rows.append((
            family, str(len(names)), _strides(names), _wrappers(names[0]),
            column('torch.export', dims), column('onnx', dims), column('compile', 'fullgraph'),
        ))
    return rows


def render_table() -> str:
    """The Markdown block (without the markers), ending with a newline.

    >>> render_table().startswith('| family |')
    True
    """
    header = ('family', 'models', 'output strides', 'feature_cls (default in bold)', 'torch.export', 'ONNX',
              'torch.compile')
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in family_rows()]
    lines.append('')
    lines += list(_NOTES)
    return '\n'.join(lines) + '\n'


def extract_block(text: str) -> Optional[str]:
    """The current block between the markers in ``text``, or None when the markers are absent.

    >>> extract_block(f'x\\n{START}\\n| a |\\n{END}\\n')
    '| a |\\n'
    """
    match = _BLOCK.search(text)
    return match.group(1) if match else None


def replace_block(text: str, block: str) -> str:
    """``text`` with the block between the markers replaced (or a Capabilities section added).

    >>> replace_block(f'a\\n{START}\\nold\\n{END}\\nb\\n', 'new\\n')
    'a\\n<!-- capabilities:start -->\\nnew\\n<!-- capabilities:end -->\\nb\\n'
    """
    wrapped = f'{START}\n{block}{END}'
    if _BLOCK.search(text):
        return _BLOCK.sub(lambda _: wrapped, text, count=1)
    section = f'## Capabilities\n\nGenerated by `python tools/gen_capabilities_table.py --write`.\n\n{wrapped}\n\n'
    anchor = text.find('\n## Layout')
    if anchor < 0:
        return text.rstrip('\n') + '\n\n' + section.rstrip('\n') + '\n'
    return text[:anchor + 1] + section + text[anchor + 1:]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--write', action='store_true', help='rewrite the block in README.md')
    mode.add_argument('--check', action='store_true', help='exit 1 if README.md is out of date')
    parser.add_argument('--readme', default=README, help='the README to read or rewrite (default: %(default)s)')
    args = parser.parse_args(argv)
    block = render_table()
    if not (args.write or args.check):
        sys.stdout.write(block)
        return 0
    if not os.path.isfile(args.readme):
        raise FileNotFoundError(f'README {args.readme!r} does not exist')
    with open(args.readme, encoding='utf-8') as f:
        text = f.read()
    if args.check:
        if extract_block(text) != block:
            print(f'{args.readme}: capabilities table out of date; run python tools/gen_capabilities_table.py --write')
            return 1
        return 0
    updated = replace_block(text, block)
    if updated != text:
        with open(args.readme, 'w', encoding='utf-8') as f:
            f.write(updated)
        print(f'{args.readme}: capabilities table updated')
    return 0


if __name__ == '__main__':
    sys.exit(main())
