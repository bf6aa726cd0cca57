"""featzoo against timm, side by side, in one process: same weights, warm-up, alternating paired runs, medians.

One protocol for every figure in every run: a fixed number of pairs, featzoo and its reference in alternation
(featzoo first, then the reference first, ...), so a change in machine load hits both sides alike; no figure is ever
measured again because it missed. Each row shows the median of the per-pair ratios and their interquartile range;
a target is met when the median meets it. Figures that need a fresh interpreter (import time, first creation, peak
memory) run one child process per measurement, also alternating. Every run appends its figures to
``benchmarks/history.jsonl``, and RESULTS.md shows, per figure, the latest value and the range over recorded runs.

    python -m benchmarks                         # everything, writes benchmarks/RESULTS.md
    python -m benchmarks --sections eager --models resnet50 convnext_tiny --repeats 3
    python benchmarks/run.py --threads 2 --output /tmp/RESULTS.md
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python benchmarks/run.py` puts benchmarks/ first on the path, not the repository
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

EAGER_MODELS = ('resnet50', 'regnety_032', 'ecaresnet101d', 'densenet121', 'xception41', 'ese_vovnet19b_dw',
                'resnest26d', 'efficientnet_b0', 'mobilenetv3_large_100', 'convnext_tiny', 'vit_small_patch16_224',
                # the coverage issues' models: embeddings and modern backbones, then the CNN families they added
                'vit_base_patch16_clip_224', 'eva02_base_patch14_224', 'swinv2_tiny_window8_256', 'maxvit_tiny_tf_224',
                'convnextv2_tiny', 'mobilenetv4_conv_medium', 'regnetz_d8', 'cspdarknet53', 'hrnet_w18')
CREATE_MODELS = ('resnet50', 'convnext_tiny', 'vit_base_patch16_224')
# (model, compile, minimum speed-up over timm's eager features; None: reported, no target)
OPTIMIZE_CASES = (('resnet50', False, 1.3), ('resnet50', True, 1.4), ('convnext_tiny', False, 1.2),
                  ('convnext_tiny', True, 1.3), ('efficientnet_b0', False, 1.2), ('efficientnet_b0', True, 1.3),
                  ('vit_base_patch16_224', False, 1.1), ('vit_base_patch16_224', True, 1.1))
FAMILY_TARGET = 1.0  # one representative per registered family: never slower than timm eager
BF16_MODELS = ('resnet50', 'convnext_tiny', 'vit_base_patch16_224')
BF16_TARGET = 1.6  # bfloat16 optimized over float32 optimized, on CPUs with native bfloat16
PEAK_CAP = 0.85  # a speed-up target above this fraction of the measured float32 peak is capped there
SECTIONS = ('import', 'create', 'eager', 'optimize', 'bf16', 'extract', 'fx')
HISTORY = os.path.join(ROOT, 'benchmarks', 'history.jsonl')

EAGER_TARGET = 1.02
CREATE_TARGET = 0.30
MEMORY_TARGET = 1.3
IMPORT_TARGET = 0.3
EXTRACT_TARGET = 0.9
FX_TARGET = 3.0
FX_MODEL = 'vit_large_patch16_224'


# ----------------------------------------------------------------------------------------------- measurement
@dataclass
class Pair:
    """Times of the two sides of a paired measurement (seconds)."""
    featzoo: List[float]
    timm: List[float]

    @property
    def featzoo_median(self) -> float:
        return statistics.median(self.featzoo)

    @property
    def timm_median(self) -> float:
        return statistics.median(self.timm)

    @property
    def ratio(self) -> float:
        """Median over pairs of featzoo/timm."""
        return statistics.median(a / b for a, b in zip(self.featzoo, self.timm))

    @property
    def ratios(self) -> List[float]:
        """featzoo/timm of each pair."""
        return [a / b for a, b in zip(self.featzoo, self.timm)]

    @property
    def ratio_iqr(self) -> Tuple[float, float]:
        """First and third quartile of the per-pair ratios featzoo/timm."""
        return quartiles(self.ratios)

    @property
    def speedup(self) -> float:
        """Median over pairs of timm/featzoo (higher is better)."""
        return statistics.median(b / a for a, b in zip(self.featzoo, self.timm))

    @property
    def speedup_iqr(self) -> Tuple[float, float]:
        return quartiles([b / a for a, b in zip(self.featzoo, self.timm)])

    @property
    def min_ratio(self) -> float:
        """Fastest featzoo run / fastest timm run: interference only ever adds time, so this is the noise check."""
        return min(self.featzoo) / min(self.timm)


def quartiles(values: Sequence[float]) -> Tuple[float, float]:
    """First and third quartile (both the value itself for a single value).

    >>> quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    (2.0, 4.0)
    """
    if len(values) < 2:
        return (values[0], values[0]) if values else (float('nan'), float('nan'))
    q = statistics.quantiles(values, n=4, method='inclusive')
    return q[0], q[2]


def paired(featzoo_fn: Callable[[], Any], timm_fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Pair:
    """Warm both up, then time them alternately, swapping which goes first on every repetition.

    >>> p = paired(lambda: None, lambda: None, repeats=2)
    >>> len(p.featzoo), len(p.timm)
    (2, 2)
    """
    for _ in range(warmup):
        featzoo_fn()
        timm_fn()
    out = Pair([], [])
    for i in range(repeats):
        order = [(featzoo_fn, out.featzoo), (timm_fn, out.timm)]
        for fn, times in (order if i % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return out


def run_child(code: str, threads: int) -> Dict[str, Any]:
    """Run ``code`` in a fresh interpreter (repository on the path, ``threads`` threads); it prints one JSON line."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f'benchmark child failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------------- results
@dataclass
class Row:
    """One figure: both sides, the ratio featzoo/timm (or an absolute value), the target and whether it is met."""
    section: str
    figure: str
    featzoo: Optional[float]
    timm: Optional[float]
    value: Optional[float]
    target: str
    met: Optional[bool]
    unit: str = 's'
    note: str = ''
    spread: Optional[Tuple[float, float]] = None  # interquartile range of the per-pair values


@dataclass
class Report:
    rows: List[Row] = field(default_factory=list)
    notes: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        mark = {True: 'met', False: 'NOT MET', None: ''}[row.met]
        print(f'  {row.section:9s} {row.figure:58s} {_fmt(row.featzoo, row.unit):>10s} {_fmt(row.timm, row.unit):>10s}'
              f' {_fmt(row.value, "x"):>8s} {_fmt_spread(row.spread):>13s} {row.target:>8s} {mark} {row.note}',
              flush=True)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        print(f'  note ({section}): {text}', flush=True)


def _fmt_spread(spread: Optional[Tuple[float, float]]) -> str:
    return '-' if spread is None else f'{spread[0]:.3f}-{spread[1]:.3f}'


def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return '-'
    if unit == 's':
        return f'{value * 1000:.1f} ms' if value < 1 else f'{value:.2f} s'
    if unit == 'MiB':
        return f'{value:.0f} MiB'
    if unit == 'ips':
        return f'{value:.1f} img/s'
    return f'{value:.3f}'


# ------------------------------------------------------------------------------------------------- sections
def _timm_weights(name: str, workdir: str) -> str:
    """Save a timm model's (randomly initialized) weights once; both libraries then load this file."""
    import timm
    from safetensors.torch import save_file
    path = os.path.join(workdir, f'{name}.safetensors')
    if not os.path.exists(path):
        model = timm.create_model(name)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def bench_import(report: Report, args: argparse.Namespace) -> None:
    code = ('import json, time; import torch; t = time.perf_counter(); import {lib}; '
            'print(json.dumps(dict(seconds=time.perf_counter() - t)))')
    pair = Pair([], [])
    for i in range(args.import_repeats):
        order = [('featzoo', pair.featzoo), ('timm', pair.timm)]
        for lib, times in (order if i % 2 == 0 else order[::-1]):
            times.append(run_child(code.format(lib=lib), args.threads)['seconds'])
    report.add(Row('import', '`import featzoo` after `import torch` (fresh process)', pair.featzoo_median,
                   pair.timm_median, pair.featzoo_median, f'<= {IMPORT_TARGET} s',
                   pair.featzoo_median <= IMPORT_TARGET, note=f'timm/featzoo = {pair.timm_median / pair.featzoo_median:.0f}x'))
    names = run_child('import json, sys, torch; before = set(sys.modules); import featzoo; featzoo.list_models(); '
                      'print(json.dumps(sorted(m for m in set(sys.modules) - before)))', args.threads)
    report.note('import', f'`import featzoo; featzoo.list_models()` imports {len(names)} module(s) beyond torch: '
                          f'{", ".join(names)}')


_CREATE_CHILD = '''
import json, os, time
def rss(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
import torch
torch.set_num_threads({threads})
import sys
import {lib} as lib
base = rss('VmRSS:')  # after this side's own import: the figure is what creation costs
before = set(sys.modules)
start = time.perf_counter()
model = lib.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file={path!r}))
seconds = time.perf_counter() - start
created = rss('VmHWM:') - base
imported = len(set(sys.modules) - before)
dynamo = 'torch._dynamo' in set(sys.modules) - before
model.eval()
with torch.inference_mode():
    model(torch.zeros(1, 3, 224, 224))
print(json.dumps(dict(seconds=seconds, created=created, forward=rss('VmHWM:') - base, imported=imported,
                      dynamo=dynamo)))
'''


def bench_create(report: Report, args: argparse.Namespace, workdir: str) -> None:
    import featzoo
    import timm
    for name in CREATE_MODELS:
        if not featzoo.is_model(name):
            report.note('create', f'{name} is not registered in featzoo yet: skipped')
            continue
        path = _timm_weights(name, workdir)
        size = os.path.getsize(path)
        overlay = dict(file=path)
        pair = paired(lambda: featzoo.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay),
                      lambda: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay),
                      args.create_repeats)
        report.add(Row('create', f'{name}: create_model(pretrained=True), warm process', pair.featzoo_median,
                       pair.timm_median, pair.ratio, f'<= {CREATE_TARGET}', pair.ratio <= CREATE_TARGET))
        cold = Pair([], [])
        memory: Dict[str, List[Tuple[float, float]]] = {'featzoo': [], 'timm': []}
        diagnosis = ''
        for i in range(args.cold_repeats):
            order = [('featzoo', cold.featzoo), ('timm', cold.timm)]
            for lib, times in (order if i % 2 == 0 else order[::-1]):
                out = run_child(_CREATE_CHILD.format(threads=args.threads, lib=lib, name=name, path=path),
                                args.threads)
                times.append(out['seconds'])
                memory[lib].append((out['created'], out['forward']))
                if lib == 'featzoo' and out['dynamo']:
                    # the profile of such a run: most of the time and memory is this one import
                    diagnosis = (f'the meta-device build imported torch._dynamo ({out["imported"]} modules) through '
                                 f'a Python decomposition; see test_meta_build_stays_in_native_kernels')
        report.add(Row('create', f'{name}: first create_model in a fresh process', cold.featzoo_median,
                       cold.timm_median, cold.ratio, f'<= {CREATE_TARGET}', cold.ratio <= CREATE_TARGET,
                       note=diagnosis))
        mib = 1 << 20
        fz_peak = statistics.median(m[0] for m in memory['featzoo'])
        tm_peak = statistics.median(m[0] for m in memory['timm'])
        report.add(Row('memory', f'{name}: peak RSS of creation above `import torch; import <library>` / file '
                                 f'size ({size / mib:.0f} MiB)', fz_peak / mib, tm_peak / mib, fz_peak / size,
                       f'<= {MEMORY_TARGET}x', fz_peak / size <= MEMORY_TARGET, unit='MiB',
                       note=f'timm: {tm_peak / size:.2f}x' + (f'; {diagnosis}' if diagnosis else '')))
        fz_fwd = statistics.median(m[1] for m in memory['featzoo'])
        tm_fwd = statistics.median(m[1] for m in memory['timm'])
        report.add(Row('memory', f'{name}: the same after one 224 px forward (weights paged in)', fz_fwd / mib,
                       tm_fwd / mib, fz_fwd / size, '', None, unit='MiB', note=f'timm: {tm_fwd / size:.2f}x'))


def _eager_pair(name: str, path: str, **kwargs: Any):
    """featzoo's and timm's model ``name`` in eval mode, both with the weights of ``path``."""
    import featzoo
    import timm
    fz = featzoo.create_model(name, checkpoint_path=path, **kwargs).eval()
    tm = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs).eval()
    return fz, tm


def _eager_models(name: str, path: str):
    return _eager_pair(name, path) + _eager_pair(name, path, features_only=True)


def _configured_side(name: str, default: int = 224) -> int:
    """The input side timm configures a model for (its default tag's cfg, 'untrained' included): what timm runs it
    at."""
    import timm
    cfg = timm.models.get_pretrained_cfg(name)
    size = getattr(cfg, 'input_size', None) if cfg is not None else None
    return int(size[-1]) if size else default


def _eager_side(name: str, default: int) -> int:
    """``default`` for models that take any input size; a fixed-size model (windows or position tables sized at
    build time, as in timm) runs at its own pretrained input size."""
    import featzoo
    if 'dynamic_hw' in featzoo.model_capabilities(name).export:
        return default
    return _configured_side(name, default)


def bench_eager(report: Report, args: argparse.Namespace, workdir: str) -> None:
    import featzoo
    report.note('eager', f'batch {args.batch_size}, {args.img_size}x{args.img_size} (a model built for one input size '
                         'at its own, named in its row), eval mode, torch.inference_mode() on both sides, '
                         f'{args.repeats} paired repetitions after one warm-up')
    for name in args.models:
        if not featzoo.is_model(name):
            report.note('eager', f'{name} is not registered in featzoo yet: skipped')
            continue
        side = _eager_side(name, args.img_size)
        x = torch.randn(args.batch_size, 3, side, side, generator=torch.Generator().manual_seed(0))
        fz, tm, fz_feat, tm_feat = _eager_models(name, _timm_weights(name, workdir))
        figures = (('forward', fz, tm), ('forward_features', fz.forward_features, tm.forward_features),
                   ('features_only', fz_feat, tm_feat))
        with torch.inference_mode():
            for figure, a, b in figures:
                pair = paired(lambda: a(x), lambda: b(x), args.repeats)
                size = '' if side == args.img_size else f' at {side} px'
                report.add(Row('eager', f'{name}: {figure}{size}', pair.featzoo_median, pair.timm_median, pair.ratio,
                               f'<= {EAGER_TARGET}', pair.ratio <= EAGER_TARGET, spread=pair.ratio_iqr,
                               note=f'min/min {pair.min_ratio:.3f}'))
        del fz, tm, fz_feat, tm_feat


def _best_seconds(fn: Callable[[], Any], seconds: float) -> float:
    fn()
    best, spent = float('inf'), 0.0
    while spent < seconds or best == float('inf'):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return best


def float32_peak(seconds: float = 1.0) -> Tuple[float, Dict[str, float]]:
    """This machine's float32 matrix-multiply throughput (FLOP/s): the best 2048^3 product of any kernel that
    optimize_for_inference may use (BLAS through torch.mm, oneDNN's matrix multiply, oneDNN's 1x1 convolution on a
    packed weight), with each kernel's figure. Taking BLAS alone understates the peak where BLAS is not the fastest
    (MKL on an AMD EPYC: 152 GFLOP/s against oneDNN's 187), and so would cap targets too early.

    >>> float32_peak(0.01)[0] > 0
    True
    """
    from featzoo.inference import FusedLinear, _onednn_linear_works
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    kernels: Dict[str, Callable[[], Any]] = {'BLAS': lambda: torch.mm(a, b)}
    if _onednn_linear_works():
        kernels['oneDNN matmul'] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, 'none', [], '')
    conv = FusedLinear(torch.nn.Linear(n, n, bias=False), kernel='conv1x1').requires_grad_(False)
    kernels['oneDNN 1x1 conv'] = lambda: conv(a)
    with torch.inference_mode():
        figures = {name: 2 * n ** 3 / _best_seconds(fn, seconds) for name, fn in kernels.items()}
    return max(figures.values()), figures


def forward_flops(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> float:
    """Multiply-add FLOPs (x2) of one forward, as torch's flop counter counts them (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops())


def family_representatives() -> List[str]:
    """One architecture per registered family that timm also has: the one with the fewest parameters, leaving out
    timm's ``test_*`` fixtures (random-only networks of a few hundred thousand parameters, made for unit tests, whose
    10-20 ms forwards measure per-call overhead, not a backbone)."""
    import featzoo
    import timm
    from featzoo import registry
    chosen = []
    for family in featzoo.list_modules():
        names = [n for n in featzoo.list_models(module=family) if timm.is_model(n) and not n.startswith('test_')]
        if names:
            chosen.append(min(names, key=lambda n: (registry.get_arch_entry(n)['num_params'], n)))
    return chosen


def _optimize_row(report: Report, name: str, compile_: bool, target: Optional[float], path: str, x: torch.Tensor,
                  repeats: int, peak: float) -> None:
    import featzoo
    import timm
    from featzoo.inference import max_relative_error
    tm = timm.create_model(name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    fz = featzoo.create_model(name, features_only=True, checkpoint_path=path).eval()
    side = _configured_side(name, x.shape[-1])  # at the size timm builds it for (featzoo may take others)
    size = f' at {side} px' if side != x.shape[-1] else ''
    if side != x.shape[-1]:
        x = torch.randn(x.shape[0], 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = fz(x)
    flops = forward_flops(fz, x)
    start = time.perf_counter()
    opt = featzoo.optimize_for_inference(fz, compile=compile_)
    first = opt(x)
    prepare = time.perf_counter() - start
    error = max_relative_error(first, reference)

    def timm_run() -> None:
        with torch.inference_mode():
            tm(x)

    pair = paired(lambda: opt(x), timm_run, repeats)
    speedup = pair.speedup
    achieved = flops / pair.featzoo_median
    goal = target
    capped = ''
    if target is not None and flops:
        # the speed-up at which featzoo would run at PEAK_CAP of the measured peak: a target above it is capped
        ceiling = PEAK_CAP * peak * pair.timm_median / flops
        if ceiling < target:
            goal, capped = ceiling, f'; target capped at {PEAK_CAP:.0%} of peak: {ceiling:.2f}x'
    label = 'compile=True' if compile_ else 'compile=False'
    report.add(Row('optimize', f'{name}: optimize_for_inference({label}) features{size}, speed-up over timm eager',
                   pair.featzoo_median, pair.timm_median, speedup, f'>= {target}x' if target else '',
                   (speedup >= goal and error <= 1e-4) if goal else None, spread=pair.speedup_iqr,
                   note=f'{achieved / 1e9:.1f} GFLOP/s, {achieved / peak:.0%} of peak; max rel. error {error:.1e}; '
                        f'plan {opt.plan.as_dict()}; optimize + first call {prepare:.1f} s{capped}'))
    if compile_:
        torch._dynamo.reset()


def bench_optimize(report: Report, args: argparse.Namespace, workdir: str) -> None:
    import featzoo
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    peak, kernels = float32_peak()
    report.note('optimize', f'features_only at batch 8, 224x224, float32; timm eager in eval mode under '
                            f'torch.inference_mode(); speed-up = timm time / featzoo time, median over '
                            f'{args.optimize_repeats} pairs, with the interquartile range of the per-pair speed-ups; '
                            f'compile time is the first call. float32 peak of this machine, measured now (best '
                            f'2048^3 matrix product of the kernels optimize_for_inference may use: '
                            + ', '.join(f'{k} {v / 1e9:.1f}' for k, v in kernels.items()) +
                            f'): {peak / 1e9:.1f} GFLOP/s; GFLOP/s counts convolutions and '
                            f'matrix products (torch.utils.flop_counter).')
    cases = list(OPTIMIZE_CASES) + [(n, False, FAMILY_TARGET) for n in family_representatives()
                                    if n not in {c[0] for c in OPTIMIZE_CASES}]
    for name, compile_, target in cases:
        if not featzoo.is_model(name):
            report.note('optimize', f'{name} is not registered in featzoo yet: skipped')
            continue
        _optimize_row(report, name, compile_, target, _timm_weights(name, workdir), x, args.optimize_repeats, peak)


def bench_bf16(report: Report, args: argparse.Namespace, workdir: str) -> None:
    import featzoo
    from featzoo.inference import cpu_features
    features = cpu_features()
    if not features.native_bf16:
        report.note('bf16', f'not available on this CPU (flags: {", ".join(features.flags()) or "none"}; native '
                            f'bfloat16 needs avx512_bf16 or amx_bf16): optimize_for_inference(dtype=torch.bfloat16) '
                            f'warns once and runs float32 here, so there is nothing to measure')
        return
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    report.note('bf16', f'features_only at batch 8, 224x224: optimize_for_inference(dtype=torch.bfloat16) against '
                        f'optimize_for_inference() in float32, both compile=False; speed-up = float32 time / bfloat16 '
                        f'time, median over {args.optimize_repeats} pairs; cosine = lowest cosine similarity of the '
                        f'globally pooled last feature map per image against float32 eager')
    for name in BF16_MODELS:
        if not featzoo.is_model(name):
            report.note('bf16', f'{name} is not registered in featzoo yet: skipped')
            continue
        path = _timm_weights(name, workdir)
        eager = featzoo.create_model(name, features_only=True, checkpoint_path=path).eval()
        with torch.inference_mode():
            reference = eager(x)[-1].float().mean((2, 3))
        fp32 = featzoo.optimize_for_inference(featzoo.create_model(name, features_only=True, checkpoint_path=path))
        bf16 = featzoo.optimize_for_inference(featzoo.create_model(name, features_only=True, checkpoint_path=path),
                                              dtype=torch.bfloat16)
        cosine = torch.nn.functional.cosine_similarity(bf16(x)[-1].float().mean((2, 3)), reference, dim=1).min()
        pair = paired(lambda: bf16(x), lambda: fp32(x), args.optimize_repeats)
        report.add(Row('bf16', f'{name}: bfloat16 optimized features, speed-up over float32 optimized',
                       pair.featzoo_median, pair.timm_median, pair.speedup, f'>= {BF16_TARGET}x',
                       pair.speedup >= BF16_TARGET, spread=pair.speedup_iqr,
                       note=f'min cosine to float32 {cosine.item():.5f}; plan {bf16.plan.as_dict()}'))


def _make_photos(folder: str, count: int) -> None:
    """JPEG 'photos' at 640x480: smooth colour fields plus noise, so decoding costs what a real photo costs."""
    import numpy as np
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(count):
        phase = rng.uniform(0, 6.28, size=3)
        base = np.stack([127 + 100 * np.sin(xx / (40 + 10 * c) + yy / (60 + 7 * c) + phase[c]) for c in range(3)], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(folder, f'{i:05d}.jpg'), quality=90)


def _extract_seconds(folder: str, out: str, weights: str, threads: int) -> float:
    """Seconds the ``featzoo extract`` command reports for its own run (interpreter start-up excluded)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, '-m', 'featzoo', 'extract', 'resnet50', folder, '-o', out, '--checkpoint',
                           weights, '--batch-size', '32', '--device', 'cpu', '--overwrite'],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'featzoo extract failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
    summary = [line for line in proc.stderr.splitlines() if line.startswith('featzoo extract:')]
    if not summary:
        raise RuntimeError(f'featzoo extract printed no summary line:\n{proc.stderr[-3000:]}')
    return float(summary[-1].split(' s, ')[0].rsplit(', ', 1)[1])


_FORWARD_CHILD = '''
import json, time, torch
torch.set_num_threads({threads})
import featzoo
model = featzoo.optimize_for_inference(featzoo.create_model('resnet50', num_classes=0, checkpoint_path={weights!r}))
x = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
model(x)
start = time.perf_counter()
for _ in range({batches}):
    model(x)
print(json.dumps(dict(ips=32 * {batches} / (time.perf_counter() - start))))
'''


def bench_extract(report: Report, args: argparse.Namespace, workdir: str) -> None:
    import importlib.util
    import featzoo
    if importlib.util.find_spec('featzoo.cli') is None or importlib.util.find_spec('featzoo.extract') is None:
        report.note('extract', '`featzoo extract` (featzoo/cli.py, featzoo/extract/) is not in the tree yet: '
                               'not measured')
        return
    weights = _timm_weights('resnet50', workdir)
    small, large = args.extract_images, 3 * args.extract_images
    folders = {n: os.path.join(workdir, f'photos{n}') for n in (small, large)}
    for n, folder in folders.items():
        _make_photos(folder, n)
    # the difference of a small and a large run is the steady-state cost of (large - small) images: model creation,
    # worker start-up and the last partial batch cancel out. The reference forward runs right after each pair of
    # runs, over as many images, so a change of this VM's speed during the section moves both sides of a ratio.
    model = featzoo.optimize_for_inference(featzoo.create_model('resnet50', num_classes=0, checkpoint_path=weights))
    x = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    model(x)

    def forward_ips() -> float:
        batches = max(1, (large - small) // 32)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        return 32 * batches / (time.perf_counter() - start)

    cli, api, forward_cli, forward_here, forward_api = [], [], [], [], []
    child = _FORWARD_CHILD.format(threads=args.threads, weights=weights, batches=max(1, (large - small) // 32))
    for _ in range(args.cold_repeats):
        seconds = {n: _extract_seconds(folder, os.path.join(workdir, f'emb{n}'), weights, args.threads)
                   for n, folder in folders.items()}
        cli.append((large - small) / (seconds[large] - seconds[small]))
        # the command runs in a fresh process: so does its reference (a long-lived process like this one has a
        # different heap, which moves this forward by up to 10% on this host), and in this process for comparison
        forward_cli.append(run_child(child, args.threads)['ips'])
        forward_here.append(forward_ips())
        # the same pipeline handed the optimized model through the API: what the command runs, minus its start-up
        seconds = {n: featzoo.extract_embeddings(model, folder, os.path.join(workdir, f'api{n}'), batch_size=32,
                                                 device='cpu', overwrite=True, quiet=True).seconds
                   for n, folder in folders.items()}
        api.append((large - small) / (seconds[large] - seconds[small]))
        forward_api.append(forward_ips())
    report.note('extract', f'`featzoo extract resnet50 PHOTOS -o OUT --checkpoint W --batch-size 32 --device cpu` on '
                           f'{small} and {large} synthetic 640x480 JPEG photos (default workers); images/s = '
                           f'{large - small} / (difference of the two runs\' own reported seconds). The reference is '
                           f'the pure forward of the same model through optimize_for_inference (what extract runs) '
                           f'at batch 32 over {large - small} images after one warm-up batch, in a fresh process '
                           f'like the command, measured right after each pair of runs; the value is the median over '
                           f'{args.cold_repeats} repetitions of the per-repetition ratio. The second row uses a '
                           f'reference run in this long-lived benchmark process instead.')
    ratios = [a / b for a, b in zip(cli, forward_cli)]
    ratio = statistics.median(ratios)
    report.add(Row('extract', 'featzoo extract images/s vs pure forward images/s (resnet50, batch 32)',
                   statistics.median(cli), statistics.median(forward_cli), ratio, f'>= {EXTRACT_TARGET}x',
                   ratio >= EXTRACT_TARGET, unit='ips',
                   note=f'featzoo column: extract; timm column: pure forward (featzoo, optimized, fresh process); ratios '
                        f'{min(ratios):.3f}-{max(ratios):.3f}'))
    here_ratios = [a / b for a, b in zip(cli, forward_here)]
    report.add(Row('extract', 'featzoo extract images/s vs pure forward in the benchmark process',
                   statistics.median(cli), statistics.median(forward_here), statistics.median(here_ratios), '', None,
                   unit='ips', note=f'reference measured in this process; ratios '
                                    f'{min(here_ratios):.3f}-{max(here_ratios):.3f}'))
    api_ratios = [a / b for a, b in zip(api, forward_api)]
    report.add(Row('extract', 'extract_embeddings(optimize_for_inference(model)) images/s vs pure forward',
                   statistics.median(api), statistics.median(forward_api), statistics.median(api_ratios), '', None,
                   unit='ips', note=f'the pipeline given the optimized model; ratios '
                                    f'{min(api_ratios):.3f}-{max(api_ratios):.3f}'))


_FX_CHILD = '''
import json, time, torch
torch.set_num_threads({threads})
import featzoo
with torch.device('meta'):
    model = featzoo.create_model({name!r})
start = time.perf_counter()
nodes = featzoo.get_graph_node_info(model, input_size=(3, 224, 224))
print(json.dumps(dict(seconds=time.perf_counter() - start, nodes=len(nodes))))
'''


def bench_fx(report: Report, args: argparse.Namespace) -> None:
    import featzoo
    if not featzoo.is_model(FX_MODEL):
        report.note('fx', f'{FX_MODEL} is not registered yet: not measured')
        return
    try:
        featzoo.get_graph_node_info
    except (AttributeError, ImportError) as exc:
        report.note('fx', f'get_graph_node_info is not importable yet ({exc}): not measured')
        return
    cold = [run_child(_FX_CHILD.format(threads=args.threads, name=FX_MODEL), args.threads)
            for _ in range(args.cold_repeats)]
    seconds = statistics.median(c['seconds'] for c in cold)
    report.add(Row('fx', f'get_graph_node_info({FX_MODEL}), first call in a fresh process', seconds, None, seconds,
                   f'<= {FX_TARGET} s', seconds <= FX_TARGET, note=f'{cold[0]["nodes"]} nodes; model on meta'))
    with torch.device('meta'):
        model = featzoo.create_model(FX_MODEL)
    warm = []
    for _ in range(3):
        start = time.perf_counter()
        featzoo.get_graph_node_info(model, input_size=(3, 224, 224))
        warm.append(time.perf_counter() - start)
    value = statistics.median(warm)
    report.add(Row('fx', f'get_graph_node_info({FX_MODEL}), warm process', value, None, value,
                   f'<= {FX_TARGET} s', value <= FX_TARGET))


# --------------------------------------------------------------------------------------------------- output
def _machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    import safetensors
    versions = {'python': platform.python_version(), 'torch': torch.__version__,
                'safetensors': safetensors.__version__}
    with contextlib.suppress(ImportError):
        import timm
        versions['timm'] = timm.__version__
    import featzoo
    versions['featzoo'] = featzoo.__version__
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        versions['featzoo'] += ' (git ' + subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                                                         capture_output=True, text=True).stdout.strip() + ' + tree)'
    from featzoo.inference import cpu_features
    flags = cpu_features().flags()
    return dict(cpu=f'{cpu}, {os.cpu_count()} logical cores', system=platform.platform(),
                versions=', '.join(f'{k} {v}' for k, v in versions.items()),
                flags=', '.join(flags) if flags else 'none of avx2, avx512f, avx512_bf16, amx_bf16',
                torch_build=_torch_build())


def _torch_build() -> str:
    """The parts of torch's build that decide CPU speed: version, vector ISA in use, BLAS and oneDNN versions."""
    parts = [torch.__version__, f'ATen CPU capability {torch.backends.cpu.get_cpu_capability()}']
    for line in torch.__config__.show().splitlines():
        line = line.strip(' -')
        if line.startswith(('Intel(R) oneAPI Math Kernel Library', 'Intel(R) MKL-DNN', 'OpenBLAS')):
            parts.append(line.split(' for ')[0].split(' (Git')[0])
    return '; '.join(parts)


# ------------------------------------------------------------------------------------------------- history
def append_history(report: Report, started: str, machine: Dict[str, str], command: str,
                   path: str = HISTORY) -> List[Dict[str, Any]]:
    """Append this run's figures to the history file (one JSON object per line); return every recorded run."""
    record = {'started': started, 'command': command, 'cpu': machine['cpu'], 'flags': machine['flags'],
              'torch_build': machine['torch_build'],
              'rows': [{'section': r.section, 'figure': r.figure, 'value': r.value,
                        'spread': list(r.spread) if r.spread else None, 'target': r.target, 'met': r.met}
                       for r in report.rows]}
    with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')
    return read_history(path)


def read_history(path: str = HISTORY) -> List[Dict[str, Any]]:
    """Every run recorded in the history file, oldest first (an unreadable line is skipped).

    >>> read_history('/nonexistent/history.jsonl')
    []
    """
    runs = []
    with contextlib.suppress(FileNotFoundError):
        with open(path, encoding='utf-8') as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    runs.append(json.loads(line))
    return runs


def history_range(runs: Sequence[Dict[str, Any]], section: str, figure: str, cpu: str) -> Tuple[int, str]:
    """How many recorded runs on this CPU have the figure, and the range of its values over them ('' for none).

    >>> history_range([{'cpu': 'c', 'rows': [{'section': 's', 'figure': 'f', 'value': 1.5}]}], 's', 'f', 'c')
    (1, '1.500-1.500')
    """
    values = [row['value'] for run in runs if run.get('cpu') == cpu for row in run.get('rows', [])
              if row.get('section') == section and row.get('figure') == figure and row.get('value') is not None]
    unit = 's' if section in ('import', 'fx') else 'x'
    return len(values), (f'{_fmt(min(values), unit)}-{_fmt(max(values), unit)}' if values else '')


# what each section's two time columns measure
COLUMNS = {'import': ('featzoo', 'timm'), 'create': ('featzoo', 'timm'), 'memory': ('featzoo', 'timm'),
           'eager': ('featzoo', 'timm'), 'optimize': ('featzoo optimized', 'timm eager'),
           'bf16': ('bfloat16 optimized', 'float32 optimized'), 'extract': ('extract', 'pure forward'),
           'fx': ('featzoo', '-')}


def render(report: Report, args: argparse.Namespace, started: str, load: Tuple[float, float],
           elapsed: float, machine: Dict[str, str], runs: Sequence[Dict[str, Any]]) -> str:
    command = 'python -m benchmarks ' + ' '.join(sys.argv[1:])
    lines = [
        '# featzoo benchmarks', '',
        f'Generated by `{command.strip()}` on {started} in {elapsed / 60:.1f} min. Regenerate with the same command; '
        '`python -m benchmarks --help` lists the options.', '',
        f'- machine: {machine["cpu"]}; {machine["system"]}',
        f'- CPU instruction sets that decide speed: {machine["flags"]}',
        f'- torch build: {machine["torch_build"]}',
        f'- versions: {machine["versions"]}',
        f'- threads: torch.set_num_threads({args.threads}) in this process and in every child process',
        f'- load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f}',
        '- method: one process, the same weights on both sides, one warm-up, then a fixed number of alternating '
        'paired runs (featzoo first on even repetitions, the reference first on odd ones), never repeated after a '
        'miss; times are medians of each side, values are medians of the per-pair ratios (featzoo/timm, lower is '
        'better, unless the row says speed-up) and "IQR" is the interquartile range of those per-pair ratios; a '
        'target is met when the median meets it; "min/min" is the fastest featzoo run over the fastest timm run. '
        'Fresh-process figures (import, first creation, memory, first FX call) run one child interpreter per '
        'measurement, also alternating; featzoo\'s modules are byte-compiled first, as pip does for an installed '
        'timm; memory baselines are taken after each side\'s own import.',
        f'- history: `{os.path.relpath(args.history, ROOT)}` holds {len(runs)} run(s); "range" is the lowest to highest value of '
        f'the figure over the recorded runs on this CPU model (this run included), "runs" how many those are.',
    ]
    if load[0] > (os.cpu_count() or 1):
        lines.append(f'- **the machine was shared with other jobs** (load average {load[0]:.1f} at the start, '
                     f'{load[1]:.1f} at the end, on {os.cpu_count()} cores): absolute times are inflated and vary '
                     'from minute to minute; the paired ratios are the meaningful figures, and each still carries a '
                     'few percent of noise (a 2-thread OpenMP region waits for a descheduled thread).')
    met = [r for r in report.rows if r.met is not None]
    lines += ['', f'**Targets: {sum(r.met for r in met)} of {len(met)} met.**', '']
    titles = {'import': 'Import', 'create': 'Pretrained creation from a local safetensors file',
              'memory': 'Peak memory of pretrained creation', 'eager': 'Eager forward (featzoo/timm)',
              'optimize': 'optimize_for_inference against timm eager',
              'bf16': 'bfloat16 against float32, both through optimize_for_inference', 'extract': 'featzoo extract',
              'fx': 'FX node info'}
    for section in ('import', 'create', 'memory', 'eager', 'optimize', 'bf16', 'extract', 'fx'):
        rows = [r for r in report.rows if r.section == section]
        notes = report.notes.get(section, [])
        if not rows and not notes:
            continue
        lines += [f'## {titles[section]}', '']
        lines += [f'{n}' + '  ' for n in notes]
        if notes:
            lines.append('')
        if rows:
            value_head = 'ratio' if section in ('create', 'eager') else 'value'
            left, right = COLUMNS[section]
            lines += [f'| figure | {left} | {right} | {value_head} | IQR | target | met | range | runs | note |',
                      '|---|---:|---:|---:|---:|---:|:---:|---:|---:|---|']
            for r in rows:
                met_mark = {True: 'yes', False: '**no**', None: ''}[r.met]
                value = _fmt(r.value, 'x') + ('x' if r.unit == 'MiB' else '')
                if section in ('import', 'fx'):
                    value = _fmt(r.value, 's')
                count, span = history_range(runs, r.section, r.figure, machine['cpu'])
                lines.append(f'| {r.figure} | {_fmt(r.featzoo, r.unit)} | {_fmt(r.timm, r.unit)} | {value} | '
                             f'{_fmt_spread(r.spread)} | {r.target} | {met_mark} | {span} | {count} | {r.note} |')
            lines.append('')
    missed = [r for r in met if not r.met]
    if missed:
        lines += ['## Targets not met', '']
        lines += [f'- {r.section}: {r.figure}: {_fmt(r.value, "x")} (target {r.target})' for r in missed]
        lines.append('')
    return '\n'.join(lines)


README_START, README_END = '<!-- performance:start -->', '<!-- performance:end -->'


def readme_block(report: Report, started: str, machine_line: str) -> str:
    """The README's Performance summary: every figure with a target, quoted from this run."""
    met = [r for r in report.rows if r.met is not None]
    lines = [README_START,
             f'From `benchmarks/RESULTS.md` ({started}, {machine_line}; ratios featzoo/timm, lower is better, '
             f'unless the target says otherwise): **{sum(r.met for r in met)} of {len(met)} targets met.**', '',
             '| figure | value | IQR | target | met |', '|---|---:|---:|---:|:---:|']
    for r in met:
        value = _fmt(r.value, 's') if r.section in ('import', 'fx') else _fmt(r.value, 'x') + (
            'x' if r.unit in ('MiB', 'ips') or r.section in ('optimize', 'bf16') else '')
        lines.append(f'| {r.figure} | {value} | {_fmt_spread(r.spread)} | {r.target} | '
                     f'{"yes" if r.met else "**no**"} |')
    lines.append(README_END)
    return '\n'.join(lines)


def update_readme(block: str, path: str = os.path.join(ROOT, 'README.md')) -> bool:
    """Replace the README's performance block (between the markers) with ``block``; False if there is none."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(head + block + tail)
    return True


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__.splitlines()[0])
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument('--history', default=HISTORY, help='JSON-lines file every run appends its figures to')
    parser.add_argument('--models', nargs='+', default=list(EAGER_MODELS), help='models of the eager section')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=2, help='batch of the eager section')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=7, help='paired repetitions of each eager figure')
    parser.add_argument('--optimize-repeats', type=int, default=11)
    parser.add_argument('--create-repeats', type=int, default=5, help='paired in-process creations')
    parser.add_argument('--cold-repeats', type=int, default=5, help='fresh processes per side for first-call figures')
    parser.add_argument('--import-repeats', type=int, default=4)
    parser.add_argument('--extract-images', type=int, default=64, help='photos of the small extract run (the large has 3x)')
    parser.add_argument('--output', default=os.path.join(ROOT, 'benchmarks', 'RESULTS.md'))
    args = parser.parse_args(argv)
    for key in ('threads', 'batch_size', 'img_size', 'repeats', 'optimize_repeats', 'create_repeats',
                'cold_repeats', 'import_repeats', 'extract_images'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1, got {getattr(args, key)}')
    return args


def _byte_compile_featzoo() -> None:
    """Write featzoo's bytecode caches, as `pip install` does for timm in site-packages.

    Fresh-process figures would otherwise charge featzoo, run from a source checkout, for compiling its modules at
    every start when the environment sets PYTHONDONTWRITEBYTECODE (Python still reads existing caches then).
    """
    import compileall
    import featzoo
    compileall.compile_dir(os.path.dirname(featzoo.__file__), quiet=1)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the selected sections and write the report.

    >>> main(['--sections', 'import', '--import-repeats', '1', '--output', '/tmp/featzoo_results.md'])  # doctest: +SKIP
    """
    args = parse_args(argv)
    import importlib.util
    if importlib.util.find_spec('timm') is None:
        raise SystemExit('the benchmarks compare featzoo with timm: pip install timm')
    torch.set_num_threads(args.threads)
    _byte_compile_featzoo()
    started = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    load_start = os.getloadavg()[0]
    begin = time.perf_counter()
    report = Report()
    with tempfile.TemporaryDirectory(prefix='featzoo-bench-') as workdir:
        for section in SECTIONS:
            if section not in args.sections:
                continue
            print(f'[{section}]', flush=True)
            if section == 'import':
                bench_import(report, args)
            elif section == 'create':
                bench_create(report, args, workdir)
            elif section == 'eager':
                bench_eager(report, args, workdir)
            elif section == 'optimize':
                bench_optimize(report, args, workdir)
            elif section == 'bf16':
                bench_bf16(report, args, workdir)
            elif section == 'extract':
                bench_extract(report, args, workdir)
            else:
                bench_fx(report, args)
    machine = _machine()
    runs = append_history(report, started, machine, 'python -m benchmarks ' + ' '.join(sys.argv[1:]), args.history)
    text = render(report, args, started, (load_start, os.getloadavg()[0]), time.perf_counter() - begin, machine,
                  runs)
    with open(args.output, 'w') as f:
        f.write(text + '\n')
    print(f'wrote {args.output}')
    if set(args.sections) == set(SECTIONS) and args.models == list(EAGER_MODELS) and args.threads == 2:
        # only a complete run at the settings speaks for the README
        if update_readme(readme_block(report, started, f'{machine["cpu"]} ({machine["flags"]}), '
                                                           f'{args.threads} threads')):
            print('updated the Performance block of README.md')


if __name__ == '__main__':
    main()
