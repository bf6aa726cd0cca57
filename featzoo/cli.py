"""The ``featzoo`` command: list, info, nodes, extract, visualize.

Argument parsing only; the work is done by the library (``featzoo.extract_embeddings``, ``featzoo.visualize``, the
registry and the factory). Exit status: 0 on success, 2 on usage errors (bad options or config files), 1 on other
errors, each reported as one line (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ['main', 'build_parser', 'load_config', 'ConfigError']

PROG = 'featzoo'
_WILDCARDS = '*?['

# Each command's defaults: the values an option takes when neither the command line nor --config gives it.
DEFAULTS: Dict[str, Dict[str, Any]] = {
    'list': dict(filter=None, pretrained=False),
    'info': dict(out_indices=None, output_stride=None, input_size=None, json=False),
    'nodes': dict(input_size=None, filter=None, json=False),
    'extract': dict(checkpoint=None, pretrained=True, batch_size=32, workers=None, device=None, normalize=False,
                    dtype='float32', fast_decode=False, overwrite=False, input_size=None, shard_size=10000,
                    autocast='none', seed=0, quiet=False, optimize=True, compile=False, max_pixels=89_478_485,
                    pre_logits=None),
    'visualize': dict(out_indices=None, checkpoint=None, pretrained=True, mode='top', input_size=None, seed=0),
}
# Values a command cannot run without, by dest, with how the user names them.
REQUIRED: Dict[str, Tuple[Tuple[str, str], ...]] = {
    'list': (), 'info': (('model', 'MODEL'),), 'nodes': (('model', 'MODEL'),),
    'extract': (('model', 'MODEL'), ('images', 'IMAGES'), ('output', '-o/--output OUT')),
    'visualize': (('model', 'MODEL'), ('image', 'IMAGE'), ('output', '-o/--output OUT.png')),
}


class ConfigError(ValueError):
    """A --config file that cannot be used: missing, not TOML, an unknown key or a value of the wrong kind."""


# ---------------------------------------------------------------------------------------------- value parsing


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse ``type`` for an integer >= ``minimum``; ``wording`` names the valid values in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f'expected {wording}, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'expected {wording}, got {value}')
        return value
    return parse


_positive_int = _int_at_least(1, 'a positive integer')
_non_negative_int = _int_at_least(0, 'an integer >= 0')


def _index_list(text: str) -> Tuple[int, ...]:
    """``'1,2,-1'`` -> (1, 2, -1)."""
    parts = [p.strip() for p in str(text).split(',') if p.strip()]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated level indices such as '1,2,-1', got {text!r}") \
            from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one level index such as '1,2,-1', got {text!r}")
    return values


def _wildcard(pattern: str) -> str:
    # A plain word matches anywhere in the name: `featzoo list resnet` is what people type.
    return pattern if any(c in pattern for c in _WILDCARDS) else f'*{pattern}*'


# ------------------------------------------------------------------------------------------------- the parser


def _common(parser: argparse.ArgumentParser, config: bool = True) -> None:
    parser.add_argument('--debug', action='store_true', help='show the full traceback of an error')
    if config:
        parser.add_argument('--config', metavar='FILE',
                            help='TOML file whose keys are this command\'s long option names (and positional '
                                 'names); options on the command line override it')


def _weights_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--checkpoint', metavar='FILE', help='weights file (.safetensors, .pth, .bin) to load')
    parser.add_argument('--pretrained', action=argparse.BooleanOptionalAction,
                        help='load the default pretrained tag when no --checkpoint is given (default); '
                             '--no-pretrained uses random weights drawn from --seed')
    parser.add_argument('--seed', type=_non_negative_int, metavar='N', help='seed of random weights (default 0)')


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (options absent from the command line are absent from the result).

    >>> build_parser().parse_args(['list', 'resnet*'])
    Namespace(command='list', filter='resnet*')
    """
    parser = argparse.ArgumentParser(
        prog=PROG, description='featzoo: a timm-compatible model zoo where every network is a feature backbone.')
    from . import __version__
    parser.add_argument('--version', action='version', version=f'{PROG} {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    quiet_default = dict(argument_default=argparse.SUPPRESS)

    p = sub.add_parser('list', help='model names, one per line', **quiet_default,
                       description='Model names, one per line. FILTER is a shell wildcard; a plain word matches '
                                   'anywhere in the name.')
    p.add_argument('filter', nargs='?', metavar='FILTER')
    p.add_argument('--pretrained', action='store_true', help="only names with published weights, as 'arch.tag'")
    _common(p, config=False)

    p = sub.add_parser('info', help='feature levels, parameters and preprocessing of a model', **quiet_default,
                       description='Per feature level: index, module, channels, reduction and output size at the '
                                   'input size; parameter counts; the default pretrained tag and its preprocessing.')
    p.add_argument('model', nargs='?', metavar='MODEL')
    p.add_argument('--out-indices', type=_index_list, metavar='1,2,-1', help='levels to show (default: all)')
    p.add_argument('--output-stride', type=_positive_int, metavar='N', help='8, 16 or 32 where the model allows')
    p.add_argument('--input-size', type=_positive_int, nargs=2, metavar=('H', 'W'),
                   help='input height and width (default: the pretrained input size)')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    _common(p)

    p = sub.add_parser('nodes', help='the FX graph nodes of a model with shapes', **quiet_default,
                       description='Every FX graph node (usable as return_nodes) with op, output shape, channels and '
                                   'reduction, computed on the meta device (no weights, no compute).')
    p.add_argument('model', nargs='?', metavar='MODEL')
    p.add_argument('--input-size', type=_positive_int, nargs=2, metavar=('H', 'W'),
                   help='input height and width (default: the pretrained input size)')
    p.add_argument('--filter', metavar='GLOB', help='only nodes whose name matches (a plain word matches anywhere)')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    _common(p)

    p = sub.add_parser('extract', help='embed every image of a folder (resumable, sharded, torchrun-ready)',
                       **quiet_default,
                       description='Embed every image under IMAGES (recursively) with the pooled pre-logits of '
                                   'MODEL on its own eval preprocessing (with the output of its head where that is '
                                   'an image-text projection: CLIP, SigLIP, EVA-CLIP, ...). OUT gets safetensors shards and '
                                   'manifest.json; rerunning the same command resumes; under torchrun the work is '
                                   'split across ranks.',
                       epilog='Rerunning the same command after an interruption (even SIGKILL) finishes the job '
                              'without redoing finished shards; only --batch-size, --workers, --device and --quiet '
                              'may change between runs, any other difference (or a changed image set) is an error '
                              'naming it (or start over with --overwrite). OUT is locked while a run uses it: a '
                              'second run on it fails at once naming the first. '
                              'Distributed: torchrun --standalone --nproc_per_node=N -m featzoo extract ...; across '
                              'machines give torchrun its usual rendezvous options and put OUT on a filesystem '
                              'every machine shares.')
    p.add_argument('model', nargs='?', metavar='MODEL', help="registered model name, e.g. 'resnet50' or "
                                                            "'resnet50.a1_in1k'")
    p.add_argument('images', nargs='?', metavar='IMAGES',
                   help='folder searched recursively for .jpg .jpeg .png .bmp .webp .gif .tif .tiff (any case)')
    p.add_argument('-o', '--output', metavar='OUT', help='output folder (created if missing)')
    _weights_options(p)
    p.add_argument('--batch-size', type=_positive_int, metavar='N', help='images per forward pass (default 32)')
    p.add_argument('--workers', type=_non_negative_int, metavar='N',
                   help='decoding processes (default: min(4, CPUs); 0 decodes in the main process)')
    p.add_argument('--device', metavar='cpu|cuda', help='where the model runs (default: cuda when available)')
    p.add_argument('--normalize', action=argparse.BooleanOptionalAction, help='L2-normalize every embedding')
    p.add_argument('--dtype', choices=('float32', 'float16'), help='storage type of the embeddings (default float32)')
    p.add_argument('--fast-decode', action=argparse.BooleanOptionalAction,
                   help='let Pillow decode JPEGs at reduced size when the target is much smaller (faster, changes '
                        'pixels slightly)')
    p.add_argument('--overwrite', action='store_true', help='discard an existing extraction in OUT and start over')
    p.add_argument('--input-size', type=_positive_int, nargs=2, metavar=('H', 'W'),
                   help='preprocess to this size instead of the pretrained input size')
    p.add_argument('--shard-size', type=_positive_int, metavar='N',
                   help='images per shard, the unit of resumption (default 10000)')
    p.add_argument('--autocast', choices=('none', 'bf16', 'fp16'),
                   help='run the model under torch.autocast: bf16 (CPU or CUDA) or fp16 (CUDA); default none. '
                        'On the CPU, bf16 with --optimize runs optimize_for_inference(dtype=torch.bfloat16): native '
                        'bfloat16 where the CPU has it, else float32 with a warning')
    p.add_argument('--precision', dest='autocast', metavar='{float32,bf16,fp16}', choices=('none', 'bf16', 'fp16'),
                   type=lambda v: 'none' if v == 'float32' else v, help='the same as --autocast (float32 = none)')
    p.add_argument('--optimize', action=argparse.BooleanOptionalAction,
                   help='run through featzoo.optimize_for_inference: batch norm folded into convolutions, '
                        'channels_last, oneDNN linear layers (default; --no-optimize runs the model as built)')
    p.add_argument('--compile', action=argparse.BooleanOptionalAction,
                   help='also torch.compile the model with frozen weights (slow first batch, faster after)')
    p.add_argument('--max-pixels', type=_positive_int, metavar='N',
                   help='skip images whose header promises more than N pixels, before decoding them (default '
                        "89478485, Pillow's default limit)")
    p.add_argument('--pre-logits', action=argparse.BooleanOptionalAction,
                   help="store the pooled pre-logits even where the head is an image-text projection; "
                        "--no-pre-logits stores the head's output (logits for a classifier). Default: the head's "
                        "output for projection heads (CLIP, SigLIP, EVA-CLIP, PE, MobileCLIP), else the pre-logits; "
                        "manifest.json's 'output' says which")
    p.add_argument('--quiet', action='store_true', help='no progress bar and no summary line')
    _common(p)

    p = sub.add_parser('visualize', help='draw the feature maps of one image to a PNG, JPEG or WebP',
                       **quiet_default,
                       description='One picture with the input and a labelled panel per feature level: the 16 channels '
                                   'with the highest mean activation (each to its own range), or with --mode pca '
                                   'the first three principal components as RGB.')
    p.add_argument('model', nargs='?', metavar='MODEL', help='registered model name')
    p.add_argument('image', nargs='?', metavar='IMAGE', help='image file')
    p.add_argument('-o', '--output', metavar='OUT.png',
                   help='picture to write, in the format its extension names: .png, .jpg/.jpeg or .webp')
    p.add_argument('--out-indices', type=_index_list, metavar='1,2,-1', help='levels to draw (default: all)')
    _weights_options(p)
    p.add_argument('--mode', choices=('top', 'pca'), help='top: 16 strongest channels (default); pca: 3 components')
    p.add_argument('--input-size', type=_positive_int, nargs=2, metavar=('H', 'W'),
                   help='preprocess to this size instead of the pretrained input size')
    _common(p)
    for command, sub_parser in sub.choices.items():
        _mark_required(sub_parser, command)
    return parser


def _mark_required(sub: argparse.ArgumentParser, command: str) -> None:
    """Put the values a command needs first in its usage line, without brackets: they are optional to argparse only
    so that a --config file can give them; to the person reading the usage they are required."""
    usage = ' '.join(sub.format_usage().split()[1:])  # 'usage: featzoo extract ...' -> 'featzoo extract ...'
    usage = usage[len(sub.prog):].strip()
    needed = []
    for dest, _ in REQUIRED[command]:
        action = next(a for a in sub._actions if a.dest == dest)
        shown = f'{action.option_strings[0]} {action.metavar}' if action.option_strings else action.metavar
        usage = usage.replace(f'[{shown}]', '').replace(f' {shown}', ' ').replace(f'{shown} ', ' ')
        needed.append(shown)
    # wrap between bracketed groups only, so that '[--fast-decode | --no-fast-decode]' stays on one line
    groups = [sub.prog] + needed + re.findall(r'\[[^\]]*\]|\S+', usage)
    indent = ' ' * (len(sub.prog) + len('usage: ') + 1)
    lines = [groups[0]]
    for group in groups[1:]:
        if len('usage: ') + len(lines[-1]) + 1 + len(group) > 100:
            lines.append(indent + group)
        else:
            lines[-1] += ' ' + group
    sub.usage = '\n'.join(lines)


def _unknown_option_error(parser: argparse.ArgumentParser, command: Optional[str], extras: Sequence[str]) -> None:
    """Report arguments the command does not take with that command's usage, and the closest option it does take
    (`--batchsize` -> "did you mean --batch-size?")."""
    import difflib
    target = _subparser(parser, command) if command else parser
    options = sorted({s for a in target._actions for s in a.option_strings if s.startswith('--')})
    first = next((e for e in extras if e.startswith('-')), extras[0])
    message = f'unrecognized argument{"s" if len(extras) > 1 else ""}: {" ".join(extras)}'
    if first.startswith('-'):
        close = difflib.get_close_matches(first.split('=', 1)[0], options, n=1, cutoff=0.6)
        message += f'; did you mean {close[0]}?' if close else f'; valid options: {", ".join(options)}'
    target.error(message)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


# ------------------------------------------------------------------------------------------------- config files


def _config_keys(sub: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """Every key a config file may use for this command: long option names (dashes or underscores), positional
    names, and ``no-X`` for negatable flags."""
    keys: Dict[str, argparse.Action] = {}
    for action in sub._actions:
        if action.dest in ('help', 'config', 'debug', 'version'):
            continue
        names = [s[2:] for s in action.option_strings if s.startswith('--')] or [action.dest]
        for name in names:
            keys[name] = action
            keys[name.replace('-', '_')] = action
    return keys


def _convert(key: str, value: Any, action: argparse.Action) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(f'key {key!r} must be {expected}, got {value!r}')

    negated = key.replace('_', '-').startswith('no-')
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise fail('true or false')
        return (not value) if negated else value
    if action.nargs == 2:
        if not isinstance(value, list) or len(value) != 2:
            raise fail('a list of two values such as [224, 224]')
        items = value
    else:
        items = [value]
    converted = []
    for item in items:
        if isinstance(item, bool) or isinstance(item, (dict, float)):
            raise fail('a string or an integer')
        if isinstance(item, list):
            if action.type is not _index_list:
                raise fail('a single value')
            item = ','.join(str(v) for v in item)
        if action.type is not None:
            try:
                item = action.type(str(item))
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f'key {key!r}: {exc}') from None
        elif not isinstance(item, str):
            raise fail('a string')
        if action.choices is not None and item not in action.choices:
            raise ConfigError(f'key {key!r} must be one of {", ".join(map(str, action.choices))}, got {item!r}')
        converted.append(item)
    return converted if action.nargs == 2 else converted[0]


def load_config(path: str, sub: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a TOML job file for the command ``sub`` parses: ``{dest: value}``, checked like the command line.

    Keys are the long option names (``batch-size`` or ``batch_size``) and the positional names (``model``,
    ``images``, ``image``); relative paths are taken from the current directory, as if typed.

    >>> import tempfile; path = os.path.join(tempfile.mkdtemp(), 'job.toml')
    >>> _ = open(path, 'w').write("model = 'resnet18'\\nbatch-size = 8\\nno-pretrained = true\\n")
    >>> sorted(load_config(path, _subparser(build_parser(), 'extract')).items())
    [('batch_size', 8), ('model', 'resnet18'), ('pretrained', False)]
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        raise ConfigError('--config needs Python 3.11 or newer (tomllib)') from None
    if not os.path.isfile(path):
        raise ConfigError(f'config file {path!r} does not exist')
    try:
        with open(path, 'rb') as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f'config file {path!r} is not valid TOML: {exc}') from None
    keys = _config_keys(sub)
    values: Dict[str, Any] = {}
    for key, value in data.items():
        action = keys.get(key)
        if action is None:
            valid = sorted(k for k in keys if '_' not in k)
            raise ConfigError(f'config file {path!r}: unknown key {key!r}; valid keys: {", ".join(valid)}')
        try:
            values[action.dest] = _convert(key, value, action)
        except ConfigError as exc:
            raise ConfigError(f'config file {path!r}: {exc}') from None
    return values


def _resolve_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Dict[str, Any]:
    """Defaults, then the config file, then the command line; missing required values are usage errors."""
    command = args.command
    given = {k: v for k, v in vars(args).items() if k not in ('command', 'config', 'debug')}
    options = dict(DEFAULTS[command])
    config = getattr(args, 'config', None)
    sub = _subparser(parser, command)
    if config is not None:
        try:
            options.update(load_config(config, sub))
        except ConfigError as exc:
            sub.error(str(exc))
    options.update(given)
    missing = [label for dest, label in REQUIRED[command] if options.get(dest) is None]
    if missing:
        where = ' (on the command line or in the --config file)' if command in ('extract', 'visualize') else ''
        sub.error(f'missing {", ".join(missing)}{where}')
    return options


# ---------------------------------------------------------------------------------------------------- commands


def _print_table(rows: Sequence[Sequence[Any]], header: Sequence[str], right: Sequence[bool]) -> None:
    cells = [[str(c) for c in header]] + [['-' if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print('  '.join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip())


def cmd_list(o: Dict[str, Any]) -> int:
    """``featzoo list [FILTER] [--pretrained]``"""
    import featzoo
    names = featzoo.list_models(_wildcard(o['filter']) if o['filter'] else '', pretrained=o['pretrained'])
    if not names:
        what = 'with published weights ' if o['pretrained'] else ''
        print(f'{PROG} list: no model {what}matches {o["filter"]!r}', file=sys.stderr)
        return 1
    sys.stdout.write('\n'.join(names) + '\n')
    return 0


def _meta_forward(model: Any, size: Tuple[int, int, int]) -> List[Any]:
    import torch
    with torch.no_grad():
        try:
            out = model(torch.empty((1,) + size, device='meta'))
        except Exception:  # noqa: BLE001 - an op without a meta kernel: compute it for real on a zero image
            model = model.to_empty(device='cpu').eval()
            out = model(torch.zeros((1,) + size))
    return list(out.values()) if isinstance(out, dict) else list(out)


def _describe_data_config(cfg: Dict[str, Any]) -> str:
    c, h, w = cfg['input_size']
    return (f"{h} x {w} ({c} channels), {cfg['interpolation']} resize, crop_pct {cfg['crop_pct']} "
            f"({cfg['crop_mode']}), mean {tuple(round(v, 4) for v in cfg['mean'])}, "
            f"std {tuple(round(v, 4) for v in cfg['std'])}")


def cmd_info(o: Dict[str, Any]) -> int:
    """``featzoo info MODEL [--out-indices 1,2,-1] [--output-stride N] [--input-size H W] [--json]``"""
    import torch
    import featzoo
    from .data import resolve_data_config

    name = o['model']
    caps = featzoo.model_capabilities(name)
    published = featzoo.get_pretrained_cfg(name)
    header = featzoo.registry.get_family_header(caps.family).get('default_cfg', {})
    data_cfg = resolve_data_config(pretrained_cfg=published or header or {'input_size': (3, 224, 224)})
    chans = int(data_cfg['input_size'][0])
    size = (chans,) + (tuple(o['input_size']) if o['input_size'] else tuple(data_cfg['input_size'][1:]))
    stride = o['output_stride'] or max(caps.output_strides)
    with torch.device('meta'):
        full = featzoo.create_model(name, output_stride=o['output_stride'])
        backbone = featzoo.create_model(name, features_only=True, out_indices=o['out_indices'],
                                        output_stride=o['output_stride'])
    outputs = _meta_forward(backbone.eval(), size)
    info = backbone.feature_info
    indices = list(info.out_indices)
    levels = [dict(index=i, module=m, channels=c, reduction=r, height=int(t.shape[-2]), width=int(t.shape[-1]))
              for i, m, c, r, t in zip(indices, info.module_name(), info.channels(), info.reduction(), outputs)]
    result = dict(
        model=name, family=caps.family, parameters=sum(p.numel() for p in full.parameters()),
        backbone_parameters=sum(p.numel() for p in backbone.parameters()), input_size=list(size),
        output_stride=stride, output_strides=list(caps.output_strides), feature_cls=list(caps.feature_cls),
        default_feature_cls=caps.default_feature_cls, levels=levels,
        pretrained=None if not published else dict(
            tag=f"{published['architecture']}.{published['tag']}", hf_hub_id=published.get('hf_hub_id'),
            license=published.get('license'), data_config=data_cfg),
        default_data_config=None if published else data_cfg,
    )
    if o['json']:
        print(json.dumps(result, indent=2))
        return 0
    wrappers = ', '.join(f'{c} (default)' if c == caps.default_feature_cls else c for c in caps.feature_cls)
    print(f'{name}  (family {caps.family})')
    print(f"parameters: {result['parameters']:,} (feature backbone with these levels: "
          f"{result['backbone_parameters']:,})")
    print(f"wrappers: {wrappers}; output strides: {', '.join(map(str, caps.output_strides))}")
    print(f'input: {size[0]} x {size[1]} x {size[2]}, output stride {stride}')
    print()
    _print_table([(lv['index'], lv['module'], lv['channels'], lv['reduction'], f"{lv['height']} x {lv['width']}")
                  for lv in levels], ('index', 'module', 'channels', 'reduction', 'output H x W'),
                 (True, False, True, True, True))
    print()
    if published:
        p = result['pretrained']
        license_text = f", license {p['license']}" if p.get('license') else ''
        print(f"default pretrained tag: {p['tag']} (Hub {p['hf_hub_id']}{license_text})")
        print(f'preprocessing: {_describe_data_config(data_cfg)}')
    else:
        print('default pretrained tag: none published (use --checkpoint FILE)')
        print(f'default preprocessing: {_describe_data_config(data_cfg)}')
    return 0


def cmd_nodes(o: Dict[str, Any]) -> int:
    """``featzoo nodes MODEL [--input-size H W] [--filter GLOB] [--json]``"""
    import torch
    import featzoo
    from .data import resolve_data_config

    name = o['model']
    published = featzoo.get_pretrained_cfg(name)
    cfg = resolve_data_config(pretrained_cfg=published or {'input_size': (3, 224, 224)})
    size = (int(cfg['input_size'][0]),) + (tuple(o['input_size']) if o['input_size'] else
                                             tuple(cfg['input_size'][1:]))
    with torch.device('meta'):
        model = featzoo.create_model(name)
    nodes = featzoo.get_graph_node_info(model.eval(), input_size=size)
    if o['filter']:
        pattern = _wildcard(o['filter'])
        nodes = [n for n in nodes if fnmatch.fnmatchcase(n.name, pattern)]
        if not nodes:
            print(f'{PROG} nodes: no node of {name!r} matches {o["filter"]!r}', file=sys.stderr)
            return 1
    if o['json']:
        print(json.dumps([dict(name=n.name, op=n.op, target=n.target, shape=list(n.shape) if n.shape else None,
                               channels=n.channels, reduction=n.reduction) for n in nodes], indent=2))
        return 0
    _print_table([(n.name, n.op, 'x'.join(map(str, n.shape)) if n.shape else None, n.channels, n.reduction)
                  for n in nodes], ('name', 'op', 'shape', 'channels', 'reduction'),
                 (False, False, False, True, True))
    return 0


def cmd_extract(o: Dict[str, Any]) -> int:
    """``featzoo extract MODEL IMAGES -o OUT [...]``: calls :func:`featzoo.extract_embeddings`."""
    if 'torch' not in sys.modules:
        # Decoding workers share the cores with the forward pass. OpenMP threads that spin between parallel regions
        # hold a core the decoders could use; sleeping ones give it up (libgomp reads this when torch loads it). On
        # the 2-core benchmark host this took resnet50 extraction from 0.89-0.92 to 0.97 of the pure forward.
        os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    from .extract import extract_embeddings
    extract_embeddings(
        o['model'], o['images'], o['output'], checkpoint=o['checkpoint'], pretrained=o['pretrained'],
        batch_size=o['batch_size'], workers=o['workers'], device=o['device'], normalize=o['normalize'],
        dtype=o['dtype'], fast_decode=o['fast_decode'], overwrite=o['overwrite'],
        input_size=tuple(o['input_size']) if o['input_size'] else None, shard_size=o['shard_size'],
        autocast=o['autocast'], seed=o['seed'], quiet=o['quiet'], optimize=o['optimize'], compile=o['compile'],
        max_pixels=o['max_pixels'], pre_logits=o['pre_logits'])
    return 0


def cmd_visualize(o: Dict[str, Any]) -> int:
    """``featzoo visualize MODEL IMAGE -o OUT.png [...]``: calls :func:`featzoo.visualize.visualize`."""
    from .visualize import visualize
    vis = visualize(o['model'], o['image'], o['output'], out_indices=o['out_indices'], checkpoint=o['checkpoint'],
                    pretrained=o['pretrained'], mode=o['mode'],
                    input_size=tuple(o['input_size']) if o['input_size'] else None, seed=o['seed'])
    levels = sum(1 for p in vis.panels if p.kind == 'level')
    print(f'{PROG} visualize: {levels} feature levels ({o["mode"]}) -> {o["output"]}', file=sys.stderr)
    return 0


COMMANDS: Dict[str, Callable[[Dict[str, Any]], int]] = {
    'list': cmd_list, 'info': cmd_info, 'nodes': cmd_nodes, 'extract': cmd_extract, 'visualize': cmd_visualize,
}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # str(KeyError) would wrap the message in quotes
    else:
        text = str(exc) or type(exc).__name__
    return ' '.join(text.split())


_USER_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``featzoo`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    >>> main(['list', 'resnet18'])  # doctest: +SKIP
    resnet18
    resnet18d
    0
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_option_error(parser, getattr(args, 'command', None), extras)
    debug = bool(getattr(args, 'debug', False))
    options = _resolve_options(parser, args)
    try:
        return COMMANDS[args.command](options)
    except KeyboardInterrupt:
        print(f'{PROG} {args.command}: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error of ours; keep Python from complaining at exit.
        sys.stdout = open(os.devnull, 'w')
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (or a traceback with --debug)
        if debug:
            traceback.print_exc()
        rank = os.environ.get('RANK') if int(os.environ.get('WORLD_SIZE', '1')) > 1 else None
        where = f' [rank {rank}]' if rank is not None else ''
        if isinstance(getattr(exc, 'cli_text', None), str):
            message = ' '.join(exc.cli_text.split())  # the same error, in the flags the user typed
        elif isinstance(exc, _USER_ERRORS):
            message = _one_line(exc)
        else:  # not a mistake of the user's: say what broke and where to look
            message = f'{type(exc).__name__}: {_one_line(exc)}' + ('' if debug else ' (--debug shows the traceback)')
        print(f'{PROG} {args.command}{where}: error: {message}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
