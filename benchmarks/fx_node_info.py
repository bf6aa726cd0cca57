"""How long ``featzoo.get_graph_node_info`` takes: trace + meta-device shape propagation of every node.

Models are built on the meta device (building is not what is measured; node info never needs real weights).
``first call`` runs in a fresh interpreter and includes torch's one-time lazy imports that its meta kernels pull in
on first use; ``warm`` is the median of repeated calls in one process. Wall and CPU seconds are both given: on a
shared machine the CPU figure is the stable one.

    python benchmarks/fx_node_info.py                       # vit_large_patch16_224 and resnet152
    python benchmarks/fx_node_info.py vit_base_patch16_224 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = ['vit_large_patch16_224', 'resnet152']


def _time_calls(name: str, repeat: int) -> Dict[str, object]:
    import torch
    import featzoo
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '2')))
    with torch.device('meta'):
        model = featzoo.create_model(name)
    walls: List[float] = []
    cpus: List[float] = []
    nodes = 0
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        nodes = len(featzoo.get_graph_node_info(model, input_size=(3, 224, 224)))
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return dict(model=name, nodes=nodes, walls=walls, cpus=cpus)


def _fresh_process(name: str) -> Dict[str, object]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, __file__, name, '--child', '--repeat', '1'], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('models', nargs='*', default=DEFAULT_MODELS)
    parser.add_argument('--repeat', type=int, default=5, help='warm calls per model (median reported)')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_time_calls(args.models[0], args.repeat)))
        return
    print(f'{"model":28s} {"nodes":>6s} {"first call wall/cpu (s)":>24s} {"warm wall/cpu (s)":>20s}')
    for name in args.models:
        cold = _fresh_process(name)
        warm = _time_calls(name, args.repeat + 1)  # the first of these pays the lazy imports; drop it
        w, c = statistics.median(warm['walls'][1:]), statistics.median(warm['cpus'][1:])
        print(f'{name:28s} {warm["nodes"]:6d} {cold["walls"][0]:11.2f} / {cold["cpus"][0]:<10.2f} '
              f'{w:9.2f} / {c:<8.2f}')


if __name__ == '__main__':
    main()
