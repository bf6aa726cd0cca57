"""DistributedDataParallel on CPU (gloo, two processes): a features_only backbone trains without
``find_unused_parameters``, because the wrappers prune every module whose output no selected level needs.

DDP without ``find_unused_parameters`` fails at the second backward when a parameter got no gradient in the
first, so two steps per backbone prove the pruning; parameters must then be identical on both ranks and changed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

WORLD_SIZE = 2

# (model, create_model arguments): each family's default wrapper and a few others, tapping levels short of the
# last so that pruning matters; repeated blocks are cut down to keep the two processes quick.
CASES = [
    ('resnet10t', dict(out_indices=(1, 2))),
    ('resnet10t', dict(out_indices=(2,), feature_cls='fx')),
    ('resnet10t', dict(out_indices=(0, 3), feature_cls='hook')),
    ('convnext_atto', dict(depths=(1, 1, 1, 1), out_indices=(0, 2), feature_cls='dict')),
    ('convnext_atto', dict(depths=(1, 1, 1, 1), out_indices=(1,), feature_cls='getter')),
    ('densenet121', dict(block_config=(1, 1, 1, 1), out_indices=(1, 3))),
    ('efficientnet_b0', dict(depth_multiplier=0.1, out_indices=(2, 3))),
    ('mobilenetv3_small_050', dict(out_indices=(1, 3))),
    ('regnetx_002', dict(out_indices=(2,))),
    ('resnest14d', dict(out_indices=(1, 2))),
    ('ese_vovnet19b_slim_dw', dict(out_indices=(1, 3))),
    ('xception41', dict(middle_depth=1, out_indices=(1, 4))),
    ('xception41', dict(middle_depth=1, out_indices=(1,), feature_cls='fx')),
    ('swin_tiny_patch4_window7_224', dict(depths=(2, 2, 2, 2), out_indices=(1,))),
    ('vit_tiny_patch16_224', dict(depth=3, out_indices=(0, 1))),
    ('vit_tiny_patch16_224', dict(depth=3, out_indices=(1,), feature_cls='fx')),
]

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import featzoo

    torch.set_num_threads(1)
    rank, world, init_file, cases = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    report = []
    for name, kwargs in cases:
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        backbone = featzoo.create_model(name, features_only=True, **kwargs)
        before = torch.cat([p.detach().flatten().clone() for p in backbone.parameters()])
        model = DDP(backbone, find_unused_parameters=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank sees its own data
        error = None
        try:
            for _ in range(3):
                out = model(torch.randn(2, 3, 64, 64, generator=gen))
                feats = out.values() if isinstance(out, dict) else out
                loss = sum(f.float().square().mean() for f in feats)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        except RuntimeError as exc:
            error = str(exc).splitlines()[0]
        after = torch.cat([p.detach().flatten() for p in backbone.parameters()])
        gathered = [torch.empty_like(after) for _ in range(world)]
        dist.all_gather(gathered, after)
        report.append(dict(
            name=name, error=error,
            in_sync=all(torch.equal(gathered[0], g) for g in gathered[1:]),
            changed=bool((after - before).abs().max() > 0),
            frozen=[n for n, p in backbone.named_parameters() if p.grad is None],
        ))
    # one CI run under load lost a rank to 'terminate called without an active exception' (exit -6), cause unproven:
    # both ranks now finish their collectives before either tears gloo down
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(report))
    sys.stdout.flush()
    sys.stderr.flush()
    # skip interpreter teardown, where gloo threads still alive at exit can also end in std::terminate
    os._exit(0)
''')


# A hook level inside a block (xception's 'blocks.2.stack.act3') still runs the rest of that block, whose parameters
# then get no gradient: the hook wrapper prunes whole steps only.
HOOK_INSIDE_BLOCK = [('xception41', dict(middle_depth=1, out_indices=(0, 2)))]


@pytest.fixture(scope='module')
def ddp_report(tmp_path_factory):
    """Train every case under DDP in one pair of processes; the report per case, in order."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip('torch built without gloo')
    cases = CASES + HOOK_INSIDE_BLOCK
    workdir = tmp_path_factory.mktemp('ddp')
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', WORKER, str(rank), str(WORLD_SIZE), str(workdir / 'rendezvous'),
                               json.dumps(cases)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=workdir)
             for rank in range(WORLD_SIZE)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=600))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    report = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert [r['name'] for r in report] == [name for name, _ in cases]
    return {json.dumps([name, kwargs]): result for (name, kwargs), result in zip(cases, report)}


def _check(report, name, kwargs):
    result = report[json.dumps([name, kwargs])]
    what = f'{name} {kwargs}'
    assert result['error'] is None, f'{what}: {result["error"]}'
    assert not result['frozen'], f'{what}: parameters without gradient (not pruned): {result["frozen"][:5]}'
    assert result['in_sync'], f'{what}: parameters differ between ranks after training'
    assert result['changed'], f'{what}: training did not change the parameters'


def test_ddp_trains_features_only_backbones_without_find_unused_parameters(ddp_report):
    for name, kwargs in CASES:
        _check(ddp_report, name, kwargs)


def test_ddp_hook_level_inside_a_block(ddp_report):
    for name, kwargs in HOOK_INSIDE_BLOCK:
        _check(ddp_report, name, kwargs)


# ---- featzoo extract across ranks: a rank that dies ----------------------------------------------------------------

EXTRACT_RANK = textwrap.dedent('''
    import os, signal, sys
    import featzoo
    from featzoo.extract import pipeline

    images, out, fate = sys.argv[1], sys.argv[2], sys.argv[3]
    if fate != 'live':  # as it starts its shards, this rank is killed (the OOM killer) or frozen (a lost machine)
        pipeline._run_shards = lambda *args, **kwargs: os.kill(os.getpid(), getattr(signal, fate))
    result = featzoo.extract_embeddings('resnet10t', images, out, pretrained=False, input_size=(32, 32), workers=0,
                                        quiet=True, shard_size=1, device='cpu')
    print('RESULT', result.rows, result.resumed_shards, flush=True)
    print('UPDATE', result.processed, result.update, flush=True)
''')


def _run_ranks(images: str, out: str, fate: str = 'live'):
    """Two extraction ranks as torchrun starts them (env:// rendezvous), without torchrun's own killing of the
    survivors; rank 1 meets ``fate`` ('live', 'SIGKILL' or 'SIGSTOP'). Returns [(returncode, stdout, stderr)]."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(WORLD_SIZE):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), FEATZOO_EXTRACT_DEAD_AFTER='3',
                   OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
        procs.append(subprocess.Popen([sys.executable, '-c', EXTRACT_RANK, images, out, fate if rank else 'live'],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = []
    try:
        for rank, proc in enumerate(procs):
            if rank and fate == 'SIGSTOP':
                proc.kill()  # frozen: it would never end by itself
            # a guard against a hang (what this test exists to catch), not a measurement
            out_text, err_text = proc.communicate(timeout=300)
            results.append((proc.returncode, out_text, err_text))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def _four_images(tmp_path):
    """Four 24 x 24 one-colour PNGs in tmp_path/images (skips where torch has no gloo backend)."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip('torch built without gloo')
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    for i, color in enumerate(('red', 'green', 'blue', 'white')):
        Image.new('RGB', (24, 24), color).save(images / f'{i}.png')
    return images


@pytest.mark.parametrize('fate', ['SIGKILL', 'SIGSTOP'])
def test_extract_ranks_stop_when_one_dies_and_the_rerun_resumes(tmp_path, fate):
    """A rank killed mid-job (its connections close) or frozen (a machine that stops answering: nothing closes):
    the survivor exits with an error naming what happened instead of waiting at the next collective for days; the
    same command then finishes, redoing only what was not done."""
    images = _four_images(tmp_path)
    out = str(tmp_path / 'out')
    (code0, _, err0), (code1, _, _) = _run_ranks(str(images), out, fate)
    assert code1 == -9
    assert code0 == 1, err0[-2000:]
    if fate == 'SIGSTOP':  # only the heartbeat can tell
        assert 'RankLostError: featzoo extract (rank 0): rank 1 of 2 stopped beating' in err0, err0[-2000:]
    else:  # the closed connection or the heartbeat, whichever comes first
        assert 'RankLostError: featzoo extract (rank 0): ' in err0, err0[-2000:]
    assert 'run the same command again to resume' in err0
    done = sorted(os.listdir(os.path.join(out, 'shards')))
    assert done == ['shard-00000.safetensors', 'shard-00002.safetensors']  # rank 0's share was finished
    if fate == 'SIGKILL':
        return  # the rerun is the same either way: once is enough
    (code0, text0, err0), (code1, _, err1) = _run_ranks(str(images), out)
    assert code0 == 0 and code1 == 0, err0[-2000:] + err1[-2000:]
    assert text0.split()[:3] == ['RESULT', '4', '2']


def test_extract_ranks_update_a_grown_folder_keeping_the_old_rows(tmp_path):
    """Incremental extraction under two ranks: after 3 images are added, 1 removed and 1 changed, the ranks
    embed only the 4 new or changed files between them, every other row is the old one bit for bit, and both
    ranks report the same update."""
    import torch
    import featzoo
    from PIL import Image
    images = _four_images(tmp_path)
    out = str(tmp_path / 'out')
    results = _run_ranks(str(images), out)
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:] + results[1][2][-2000:]
    paths0, emb0 = featzoo.read_embeddings(out)
    for name, color in (('00.png', 'black'), ('1b.png', 'yellow'), ('9.png', 'gray')):
        Image.new('RGB', (24, 24), color).save(images / name)
    (images / '2.png').unlink()
    Image.new('RGB', (24, 30), 'purple').save(images / '3.png')
    results = _run_ranks(str(images), out)
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:] + results[1][2][-2000:]
    for _, text, _ in results:
        assert "'new': 3, 'changed': 1, 'removed': 1, 'kept': 2" in text, text
    assert results[0][1].split()[:4] == ['RESULT', '6', '0', 'UPDATE'] and results[0][1].split()[4] == '4'
    paths1, emb1 = featzoo.read_embeddings(out)
    assert paths1 == ['0.png', '00.png', '1.png', '1b.png', '3.png', '9.png']
    for path in ('0.png', '1.png'):
        assert torch.equal(emb1[paths1.index(path)], emb0[paths0.index(path)]), path
    assert not torch.equal(emb1[paths1.index('3.png')], emb0[paths0.index('3.png')])


def test_liveness_mourns_only_peers_that_stop_without_saying_done():
    """In one process, with the group's kind of store: a peer that beats is alive, one that said it is done is
    never mourned, one that stops beating is named; a store that stops answering is named too."""
    import threading
    from featzoo.extract.distributed import Liveness, RankLostError
    store = dist.HashStore()
    lost = []
    found = threading.Event()

    def on_lost(error):
        lost.append(error)
        found.set()

    watcher = Liveness(store, rank=0, world_size=3, dead_after=2.0, on_lost=on_lost).start()
    peers = [Liveness(store, rank=r, world_size=3, dead_after=60.0, on_lost=on_lost) for r in (1, 2)]
    for peer in peers:
        peer._prefix = watcher._prefix  # the same job, as the ranks of one group count their calls alike
        peer.start()
    peers[0].stop()  # rank 1 finished its part and said so
    peers[1]._stop.set()  # rank 2 stops beating without a word: its process is gone
    assert found.wait(30)
    watcher.stop()
    assert len(lost) == 1 and isinstance(lost[0], RankLostError)
    assert 'rank 2 of 3 stopped beating' in str(lost[0]) and 'rank 1' not in str(lost[0])

    class Unreachable:
        def set(self, key, value):
            raise ConnectionResetError('Connection reset by peer')

    lost.clear()
    found.clear()
    silent = Liveness(Unreachable(), rank=1, world_size=2, dead_after=2.0, on_lost=on_lost)
    silent._thread.start()  # start() itself would raise on its first beat
    assert found.wait(30)
    silent.stop()
    assert "rendezvous store has not answered" in str(lost[0]) and 'ConnectionResetError' in str(lost[0])
