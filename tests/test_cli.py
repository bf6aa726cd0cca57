"""The `featzoo` command: subprocess runs of extract (incl. SIGKILL + resume and torchrun), visualize, the
inspection commands, config files, and exit codes."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import featzoo
from featzoo import cli
from featzoo.extract import list_images, read_shard_info
from helpers import assert_equal
from test_extract import MODEL, make_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Offline: a missing file fails at once instead of probing the network.
ENV = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONIOENCODING='utf-8')
SMALL = ['--no-pretrained', '--input-size', '64', '64']


def featzoo_cmd(*args: str, timeout: float = 300, cwd: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'featzoo', *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=cwd)


def run_main(args, capsys):
    """cli.main in this process: (exit status, stdout, stderr); argparse usage errors give status 2."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cli-images'))
    readable, broken = make_images(root)
    return root, readable, broken


@pytest.fixture(scope='module')
def baseline(images, tmp_path_factory):
    """The API's uninterrupted single-process result on the same images and options."""
    root, _, _ = images
    out = str(tmp_path_factory.mktemp('cli-baseline') / 'out')
    featzoo.extract_embeddings(MODEL, root, out, pretrained=False, input_size=(64, 64), workers=0, quiet=True)
    return featzoo.read_embeddings(out)


# ------------------------------------------------------------------------------------------------ extract


def test_extract_subprocess(images, baseline, tmp_path, capsys):
    root, readable, broken = images
    out = str(tmp_path / 'out')
    proc = featzoo_cmd('extract', MODEL, root, '-o', out, *SMALL, '--shard-size', '7', '--batch-size', '5',
                       '--workers', '1')
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith('featzoo extract: ') and f'{len(readable)} rows, {len(broken)} skipped' in summary
    assert 'images/s' in summary
    paths, emb = featzoo.read_embeddings(out)
    assert paths == baseline[0] == readable
    assert_equal(emb, baseline[1], 'CLI vs API', rtol=1e-4)
    with open(os.path.join(out, 'manifest.json')) as fh:
        manifest = json.load(fh)
    assert sorted(s['path'] for s in manifest['skipped']) == sorted(broken)
    assert manifest['arguments']['batch_size'] == 5 and manifest['arguments']['input_size'] == [64, 64]
    # The same command again: nothing to do, quietly (in this process from here on: the same code path, faster).
    code, out_text, err = run_main(['extract', MODEL, root, '-o', out, *SMALL, '--shard-size', '7', '--quiet'],
                                   capsys)
    assert code == 0 and out_text == '' and err == ''
    # Another setting into the same folder: one line naming the difference, exit 1.
    code, _, err = run_main(['extract', MODEL, root, '-o', out, *SMALL, '--shard-size', '7', '--dtype', 'float16'],
                            capsys)
    assert code == 1
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert '--dtype: float32 before, float16 now. To continue it, use --dtype float32' in err and '--overwrite' in err
    assert manifest['arguments']['optimize'] is True and manifest['arguments']['compile'] is False
    eager = os.path.join(str(tmp_path), 'eager')
    code, _, _ = run_main(['extract', MODEL, root, '-o', eager, *SMALL, '--no-optimize', '--quiet'], capsys)
    with open(os.path.join(eager, 'manifest.json')) as fh:
        assert code == 0 and json.load(fh)['arguments']['optimize'] is False


def _release_fifo(path: str) -> threading.Thread:
    """Let the next reader of the FIFO through: open it for writing (this waits for the reader) and close it, so
    the reader sees an empty file. Opening and closing leave the FIFO's size and mtime as they were."""
    def release() -> None:
        os.close(os.open(path, os.O_WRONLY))
    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def _finished_shards(out: str):
    shard_dir = os.path.join(out, 'shards')
    if not os.path.isdir(shard_dir):
        return {}
    return {n: os.stat(os.path.join(shard_dir, n)) for n in sorted(os.listdir(shard_dir)) if n.startswith('shard-')}


@pytest.mark.skipif(not hasattr(os, 'mkfifo') or not hasattr(os, 'killpg'), reason='needs POSIX FIFOs and killpg')
def test_sigkill_mid_run_then_resume(tmp_path):
    """A FIFO among the images holds the run in the middle (reading it waits for a writer), where it is killed
    with SIGKILL together with its decoding worker; the same command then finishes without redoing shards."""
    root = str(tmp_path / 'images')
    make_images(root)
    fifo = os.path.join(root, 'm_stall.jpg')
    os.mkfifo(fifo)
    files = [f.path for f in list_images(root)]
    shard_size = 3
    stalled_shard = files.index('m_stall.jpg') // shard_size
    num_shards = -(-len(files) // shard_size)
    assert stalled_shard >= 2 and num_shards - stalled_shard >= 2
    out = str(tmp_path / 'out')
    args = ['extract', MODEL, root, '-o', out, *SMALL, '--shard-size', str(shard_size), '--batch-size', '2',
            '--workers', '1']
    with open(tmp_path / 'killed.log', 'w') as log:
        proc = subprocess.Popen([sys.executable, '-m', 'featzoo', *args], env=ENV, stdout=log, stderr=log,
                                start_new_session=True, cwd=REPO)
        try:
            deadline = time.monotonic() + 240
            while len(_finished_shards(out)) < stalled_shard and proc.poll() is None:
                assert time.monotonic() < deadline, 'the run never reached the stalled file'
                time.sleep(0.05)
            time.sleep(0.5)  # were it able to, the run would now write past the stalled shard
            assert proc.poll() is None, open(tmp_path / 'killed.log').read()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _finished_shards(out)
    assert len(done) == stalled_shard
    assert not os.path.exists(os.path.join(out, 'manifest.json'))
    with pytest.raises(RuntimeError, match='unfinished'):
        featzoo.read_embeddings(out)

    _release_fifo(fifo)
    resumed = featzoo_cmd(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f'({stalled_shard} of {num_shards} shards were already done)' in resumed.stderr
    after = _finished_shards(out)
    for name, stat in done.items():  # finished shards were not rewritten
        assert (after[name].st_ino, after[name].st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name
    paths, emb = featzoo.read_embeddings(out)
    with open(os.path.join(out, 'manifest.json')) as fh:
        skipped = {s['path'] for s in json.load(fh)['skipped']}
    assert 'm_stall.jpg' in skipped

    reference = str(tmp_path / 'reference')
    _release_fifo(fifo)
    featzoo.extract_embeddings(MODEL, root, reference, pretrained=False, input_size=(64, 64), workers=0, quiet=True)
    ref_paths, ref = featzoo.read_embeddings(reference)
    assert paths == ref_paths
    assert_equal(emb, ref, 'resumed after SIGKILL vs uninterrupted', rtol=1e-4)


def test_torchrun_two_ranks_on_cpu(images, baseline, tmp_path):
    root, readable, broken = images
    out = str(tmp_path / 'out')
    launcher = [shutil.which('torchrun')] if shutil.which('torchrun') else [sys.executable, '-m',
                                                                              'torch.distributed.run']
    cmd = launcher + ['--standalone', '--nproc_per_node=2', '-m', 'featzoo', 'extract', MODEL, root, '-o', out,
                      *SMALL, '--shard-size', '4', '--batch-size', '3', '--workers', '0']
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=400, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count('featzoo extract: ') == 1  # rank 0 alone reports
    paths, emb = featzoo.read_embeddings(out)
    assert paths == baseline[0]
    assert_equal(emb, baseline[1], 'torchrun (2 ranks) vs single process', rtol=1e-4)
    with open(os.path.join(out, 'manifest.json')) as fh:
        manifest = json.load(fh)
    assert manifest['world_size'] == 2
    assert sorted(s['path'] for s in manifest['skipped']) == sorted(broken)
    ranks = {read_shard_info(os.path.join(out, s['file'])).rank for s in manifest['shards']}
    assert ranks == {0, 1}


def test_missing_weights_exit_1_before_any_work(images, tmp_path, monkeypatch, capsys):
    root, _, _ = images
    out = str(tmp_path / 'out')
    env_cache = str(tmp_path / 'empty-cache')
    proc = subprocess.run([sys.executable, '-m', 'featzoo', 'extract', MODEL, root, '-o', out],
                          capture_output=True, text=True, env=dict(ENV, HF_HUB_CACHE=env_cache), timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert lines[0].startswith('featzoo extract: error: no weights for')
    assert '--checkpoint FILE' in lines[0] and '--no-pretrained' in lines[0]
    # the repository and the command that fetches it, not the bare model name; no Python spelling on the command line
    assert '`hf download timm/resnet10t.c3_in1k`' in lines[0] and 'pretrained=False' not in lines[0]
    assert "holding 'resnet10t'" not in lines[0] and 'checkpoint=' not in lines[0]
    assert not os.path.exists(out)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', env_cache)
    code, _, err = run_main(['extract', MODEL, root, '-o', out, '--debug'], capsys)
    assert code == 1 and 'Traceback (most recent call last)' in err and 'WeightsUnavailableError' in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_extract_on_cuda(images, baseline, tmp_path):
    root, _, _ = images
    out = str(tmp_path / 'out')
    proc = featzoo_cmd('extract', MODEL, root, '-o', out, *SMALL, '--device', 'cuda', '--workers', '2')
    assert proc.returncode == 0, proc.stderr
    paths, emb = featzoo.read_embeddings(out)
    assert paths == baseline[0]
    assert_equal(emb, baseline[1], 'CUDA vs CPU', rtol=1e-3)


# ---------------------------------------------------------------------------------------------- visualize


def _panel_pixels(image: Image.Image, box) -> np.ndarray:
    return np.asarray(image.crop(tuple(box)).convert('L'), dtype=np.float32)


def test_visualize_writes_one_panel_per_level(images, tmp_path, capsys):
    root, _, _ = images
    png = str(tmp_path / 'maps.png')
    proc = featzoo_cmd('visualize', MODEL, os.path.join(root, 'real', 'chelsea.jpg'), '-o', png, *SMALL,
                       '--out-indices', '1,2,-1')
    assert proc.returncode == 0, proc.stderr
    with Image.open(png) as img:
        img.load()
        assert img.format == 'PNG'
        meta = json.loads(img.text['featzoo'])
        panels = meta['panels']
        assert meta['mode'] == 'top'
        assert [p['kind'] for p in panels] == ['input', 'level', 'level', 'level']
        assert [p['module'] for p in panels[1:]] == ['layer1', 'layer2', 'layer4']
        assert [p['channels'] for p in panels[1:]] == [64, 128, 512]
        assert [p['reduction'] for p in panels[1:]] == [4, 8, 32]
        assert [p['size'] for p in panels[1:]] == [[16, 16], [8, 8], [2, 2]]
        for panel in panels:
            left, top, right, bottom = panel['box']
            assert 0 <= left < right <= img.width and 0 <= top < bottom <= img.height
            assert _panel_pixels(img, panel['box']).std() > 1.0, panel  # something is drawn there
    code, _, err = run_main(['visualize', MODEL, os.path.join(root, 'gray.png'), '-o', str(tmp_path / 'pca.png'),
                             *SMALL, '--mode', 'pca'], capsys)
    assert code == 0, err
    assert 'feature levels (pca)' in err
    code, _, err = run_main(['visualize', MODEL, str(tmp_path / 'nope.jpg'), '-o', str(tmp_path / 'n.png'), *SMALL],
                            capsys)
    assert code == 1 and "nope.jpg' does not exist" in err and not os.path.exists(tmp_path / 'n.png')
    with Image.open(tmp_path / 'pca.png') as img:
        assert len(json.loads(img.text['featzoo'])['panels']) == 6  # input + resnet10t's five levels


# -------------------------------------------------------------------------------- list, info, nodes, errors


def test_list_subprocess_and_exit_codes():
    proc = featzoo_cmd('list', 'resnet1')
    assert proc.returncode == 0
    names = proc.stdout.split()
    assert 'resnet18' in names and 'resnet101' in names and all('resnet1' in n for n in names)
    assert names == featzoo.list_models('*resnet1*')
    proc = featzoo_cmd('list', 'resnet18.*', '--pretrained')
    assert proc.returncode == 0 and 'resnet18.a1_in1k' in proc.stdout.split()
    proc = featzoo_cmd('list', 'no_such_model_xyz')
    assert proc.returncode == 1 and 'no_such_model_xyz' in proc.stderr
    proc = featzoo_cmd()
    assert proc.returncode == 2 and 'usage' in proc.stderr


def test_info_table_and_json(capsys):
    code, out, _ = run_main(['info', 'resnet18', '--out-indices', '1,2,-1', '--output-stride', '16',
                             '--input-size', '160', '128', '--json'], capsys)
    assert code == 0
    info = json.loads(out)
    assert [lv['index'] for lv in info['levels']] == [1, 2, 4]
    assert [lv['module'] for lv in info['levels']] == ['layer1', 'layer2', 'layer4']
    assert [lv['channels'] for lv in info['levels']] == [64, 128, 512]
    assert [lv['reduction'] for lv in info['levels']] == [4, 8, 16]
    assert [(lv['height'], lv['width']) for lv in info['levels']] == [(40, 32), (20, 16), (10, 8)]
    assert info['parameters'] == sum(p.numel() for p in featzoo.create_model('resnet18').parameters())
    assert info['pretrained']['tag'] == 'resnet18.a1_in1k'
    assert info['pretrained']['data_config']['crop_pct'] == 0.95
    code, out, _ = run_main(['info', 'resnet18'], capsys)
    assert code == 0
    assert 'layer4' in out and '512' in out and '7 x 7' in out and 'resnet18.a1_in1k' in out and 'parameters' in out
    code, _, err = run_main(['info', 'resnet18', '--out-indices', '7'], capsys)
    assert code == 1 and 'out_indices' in err and err.count('\n') == 1
    code, _, err = run_main(['info', 'no_such_net'], capsys)
    assert code == 1 and 'unknown model' in err


def test_nodes_table_and_json(capsys):
    code, out, _ = run_main(['nodes', 'resnet18', '--input-size', '64', '64', '--filter', 'layer4.1.*', '--json'],
                            capsys)
    assert code == 0
    nodes = json.loads(out)
    assert nodes and all(n['name'].startswith('layer4.1.') for n in nodes)
    last = [n for n in nodes if n['name'] == 'layer4.1.act2'][0]
    assert last['shape'] == [1, 512, 2, 2] and last['channels'] == 512 and last['reduction'] == 32
    code, out, _ = run_main(['nodes', 'resnet18', '--filter', 'fc'], capsys)
    assert code == 0 and out.splitlines()[0].split() == ['name', 'op', 'shape', 'channels', 'reduction']
    assert any(line.split()[0] == 'fc' for line in out.splitlines()[1:])
    code, _, err = run_main(['nodes', 'resnet18', '--filter', 'zzz'], capsys)
    assert code == 1 and 'zzz' in err


@pytest.mark.parametrize('args, words', [
    (['extract', MODEL, 'imgs'], 'missing -o/--output OUT'),
    (['extract', MODEL], 'missing IMAGES, -o/--output OUT'),
    (['extract', MODEL, 'imgs', '-o', 'x', '--dtype', 'int8'], "invalid choice: 'int8'"),
    (['extract', MODEL, 'imgs', '-o', 'x', '--batch-size', '0'], 'expected a positive integer, got 0'),
    (['extract', MODEL, 'imgs', '-o', 'x', '--input-size', '64'], 'expected 2 arguments'),
    (['info', 'resnet18', '--out-indices', 'a,b'], "level indices such as '1,2,-1'"),
    (['visualize', MODEL, 'x.jpg', '-o', 'y.png', '--mode', 'heat'], "invalid choice: 'heat'"),
    (['extract', MODEL, 'imgs', '-o', 'x', '--config', '/nonexistent.toml'], "'/nonexistent.toml' does not exist"),
    (['frobnicate'], 'invalid choice'),
])
def test_usage_errors_exit_2(args, words, capsys):
    code, _, err = run_main(args, capsys)
    assert code == 2
    assert words in err


@pytest.mark.parametrize('text, words', [
    ('batch_sise = 3', "unknown key 'batch_sise'; valid keys:"),
    ('batch-size = "many"', "key 'batch-size': expected a positive integer"),
    ('normalize = "yes"', "key 'normalize' must be true or false"),
    ('input-size = 64', "key 'input-size' must be a list of two values"),
    ('dtype = "int8"', "key 'dtype' must be one of float32, float16"),
    ('no-overwrite = true', "unknown key 'no-overwrite'"),
    ('model = [', 'not valid TOML'),
])
def test_bad_config_files_exit_2(text, words, tmp_path, capsys):
    path = tmp_path / 'job.toml'
    path.write_text(text + '\n')
    code, _, err = run_main(['extract', MODEL, 'imgs', '-o', 'x', '--config', str(path)], capsys)
    assert code == 2
    assert words in err


def test_config_values_and_command_line_overrides(images, tmp_path, capsys):
    root, readable, _ = images
    config = tmp_path / 'job.toml'
    out = tmp_path / 'out'
    config.write_text(f'model = "{MODEL}"\nimages = "{root}"\noutput = "{out}"\npretrained = false\n'
                      f'input-size = [64, 64]\nbatch_size = 3\nnormalize = true\nshard-size = 4\nworkers = 0\n'
                      f'quiet = true\n')
    code, _, err = run_main(['extract', '--config', str(config), '--batch-size', '6', '--no-normalize'], capsys)
    assert code == 0, err
    with open(out / 'manifest.json') as fh:
        arguments = json.load(fh)['arguments']
    assert arguments['batch_size'] == 6 and arguments['normalize'] is False  # the command line wins
    assert arguments['shard_size'] == 4 and arguments['pretrained'] is False and arguments['input_size'] == [64, 64]
    assert featzoo.read_embeddings(str(out))[0] == readable


@pytest.mark.parametrize('config', sorted(glob.glob(os.path.join(REPO, 'configs', '*.toml'))),
                         ids=lambda p: os.path.basename(p))
def test_shipped_configs_run(config, tmp_path, monkeypatch, capsys):
    """Every job file in configs/ runs from the repository root (offline here: random weights, small input)."""
    import tomllib
    with open(config, 'rb') as fh:
        job = tomllib.load(fh)
    monkeypatch.chdir(REPO)
    command = 'visualize' if 'image' in job else 'extract'
    out = str(tmp_path / ('maps.png' if command == 'visualize' else 'out'))
    args = [command, '--config', config, '-o', out, '--no-pretrained', '--input-size', '96', '96']
    if command == 'extract':
        args += ['--workers', '0', '--quiet']
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    if command == 'extract':
        with open(os.path.join(out, 'manifest.json')) as fh:
            manifest = json.load(fh)
        samples = sorted(n for n in os.listdir(os.path.join(REPO, job['images'])) if n.endswith('.jpg'))
        assert featzoo.read_embeddings(out)[0] == samples and manifest['skipped'] == []
        assert manifest['model'] == job['model'] and manifest['arguments']['normalize'] == job.get('normalize', False)
        assert manifest['dtype'] == job.get('dtype', 'float32')
        assert manifest['arguments']['autocast'] == job.get('autocast', 'none')
    else:
        with Image.open(out) as img:
            panels = json.loads(img.text['featzoo'])['panels']
        assert len(panels) == 1 + len(job['out-indices'])
        assert json.loads(Image.open(out).text['featzoo'])['mode'] == job['mode']


def test_samples_quickstart_rows_match_the_model(tmp_path, monkeypatch, capsys):
    """The README's Quickstart command on samples/: one row per photo, equal to the model on its own transform."""
    out = str(tmp_path / 'out')
    monkeypatch.chdir(REPO)
    photos = sorted(n for n in os.listdir(os.path.join(REPO, 'samples')) if n.endswith('.jpg'))
    assert len(photos) >= 4
    code, _, err = run_main(['extract', 'resnet18', 'samples', '-o', out, '--no-pretrained'], capsys)
    assert code == 0, err
    assert f'featzoo extract: {len(photos)} rows, 0 skipped' in err
    paths, emb = featzoo.read_embeddings(out)
    assert paths == photos
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = featzoo.create_model('resnet18', num_classes=0).eval()
    cfg = featzoo.data.resolve_data_config(model=model)
    tf = featzoo.data.create_transform(**cfg)
    with torch.no_grad():
        x = torch.stack([tf(featzoo.data.load_image(os.path.join(REPO, 'samples', p))) for p in paths])
        ref = model.forward_head(model.forward_features(x), pre_logits=True)
    assert_equal(emb, ref, 'samples quickstart', rtol=1e-3)



_WAIT_POLICY_CHILD = '''
import json, os, sys, types
seen = {}
fake = types.ModuleType('featzoo.extract')
fake.extract_embeddings = lambda *a, **k: seen.update(policy=os.environ.get('OMP_WAIT_POLICY'),
                                                       torch='torch' in sys.modules)
sys.modules['featzoo.extract'] = fake
from featzoo import cli
status = cli.main(['extract', 'resnet18', 'photos', '-o', 'out'])
print(json.dumps(dict(seen, status=status)))
'''


@pytest.mark.parametrize('given', [None, 'ACTIVE'])
def test_extract_lets_idle_openmp_threads_sleep(given):
    """Before torch (and its OpenMP runtime) loads, `featzoo extract` asks for sleeping idle threads, so decoding
    workers get the cores between parallel regions; a policy the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if given:
        env['OMP_WAIT_POLICY'] = given
    out = subprocess.run([sys.executable, '-c', _WAIT_POLICY_CHILD], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == dict(policy=given or 'PASSIVE', torch=False, status=0)


@pytest.mark.parametrize('args, usage, hint', [
    (['extract', MODEL, 'imgs', '-o', 'x', '--batchsize', '8'], 'usage: featzoo extract MODEL IMAGES -o OUT',
     'unrecognized arguments: --batchsize 8; did you mean --batch-size?'),
    (['extract', MODEL, 'imgs', '-o', 'x', '--no-pretrianed'], 'usage: featzoo extract MODEL IMAGES -o OUT',
     'did you mean --no-pretrained?'),
    (['list', '--pretraned'], 'usage: featzoo list', 'unrecognized argument: --pretraned; did you mean --pretrained?'),
    (['visualize', MODEL, 'a.jpg', '-o', 'b.png', '--out_indices', '1'], 'usage: featzoo visualize MODEL IMAGE -o '
     'OUT.png', 'did you mean --out-indices?'),
    (['info', MODEL, '--zzzzzz'], 'usage: featzoo info MODEL', 'valid options: --config, --debug, --help'),
])
def test_a_misspelt_option_shows_its_commands_usage_and_the_closest_option(args, usage, hint, capsys):
    code, _, err = run_main(args, capsys)
    assert code == 2
    assert err.startswith(usage), err
    assert f'featzoo {args[0]}: error: ' in err and hint in err, err


@pytest.mark.parametrize('command, needed', [('extract', 'MODEL IMAGES -o OUT'), ('visualize', 'MODEL IMAGE -o OUT.png'),
                                             ('info', 'MODEL'), ('nodes', 'MODEL')])
def test_help_shows_required_arguments_as_required(command, needed, capsys):
    code, out, _ = run_main([command, '--help'], capsys)
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith(f'usage: featzoo {command} {needed} [-h]'), first
    for word in needed.split():
        if word not in ('-o',):
            assert f'[{word}]' not in out and f'[-o {word}]' not in out


def test_a_settings_change_is_reported_in_command_line_flags(images, tmp_path, capsys):
    """The CLI names the flag that continues the job (--no-normalize), never the Python spelling."""
    root, _, _ = images
    out = str(tmp_path / 'out')
    base = ['extract', MODEL, root, '-o', out, *SMALL, '--workers', '0', '--quiet', '--no-optimize']
    code, _, err = run_main(base, capsys)
    assert code == 0, err
    code, _, err = run_main(base + ['--normalize', '--shard-size', '7'], capsys)
    assert code == 1
    assert ("--normalize: off before, on now; --shard-size: 10000 before, 7 now. To continue it, use --no-normalize "
            "--shard-size 10000; or choose another output folder, or pass --overwrite to start over") in err, err
    assert 'normalize=' not in err and 'overwrite=True' not in err


def test_quickstart_and_shipped_config_outputs_cannot_collide():
    """The README's commands and the shipped job files write to different folders, so running one after the other
    (as a new user does) never meets "holds an extraction made with other settings"."""
    import re
    import tomllib
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    readme_outputs = set(re.findall(r'featzoo (?:extract|visualize) [^\n`]*?-o (\S+)', readme))
    assert 'out/samples' in readme_outputs
    for config in glob.glob(os.path.join(REPO, 'configs', '*.toml')):
        with open(config, 'rb') as fh:
            job = tomllib.load(fh)
        assert job['output'] not in readme_outputs, (config, job['output'])
    outputs = []
    for config in glob.glob(os.path.join(REPO, 'configs', '*.toml')):
        with open(config, 'rb') as fh:
            outputs.append(tomllib.load(fh)['output'])
    assert len(outputs) == len(set(outputs))


def test_messages_name_the_problem_and_the_fix_in_the_users_interface(images, tmp_path, capsys):
    """A text file as --checkpoint is "not a weights file", not "(corrupt or truncated?): 101"; fp16 autocast on
    CPU answers with --autocast bf16 on the command line and autocast='bf16' in Python."""
    root, _, _ = images
    notes = tmp_path / 'notes.txt'
    notes.write_text('remember the milk\n')
    out = str(tmp_path / 'out')
    code, _, err = run_main(['extract', MODEL, root, '-o', out, '--checkpoint', str(notes)], capsys)
    assert code == 1
    assert (f"'{notes}' is not a weights file: it is neither safetensors nor a checkpoint written by torch.save "
            f"(it starts with b'remember the mil'); give a .safetensors file") in err, err
    code, _, err = run_main(['extract', MODEL, root, '-o', out, *SMALL, '--device', 'cpu', '--autocast', 'fp16'],
                            capsys)
    assert code == 1
    assert ('--precision fp16 (--autocast fp16) runs on CUDA only and the device is cpu; on CPU use --precision bf16 '
            'or float32') in err, err
    assert "autocast='" not in err
    with pytest.raises(ValueError, match=r"autocast='fp16' runs on CUDA only and device='cpu'; on CPU pass "
                                         r"autocast='bf16'") as caught:
        featzoo.extract_embeddings(MODEL, root, out, pretrained=False, device='cpu', autocast='fp16')
    assert '--' not in str(caught.value)


@pytest.mark.parametrize('name, kind', [('maps.png', 'PNG'), ('maps.jpg', 'JPEG'), ('maps.JPEG', 'JPEG'),
                                        ('maps.webp', 'WEBP')])
def test_visualize_writes_the_format_its_extension_names(images, tmp_path, name, kind, capsys):
    root, _, _ = images
    out = str(tmp_path / name)
    code, _, err = run_main(['visualize', MODEL, os.path.join(root, 'gray.png'), '-o', out, *SMALL], capsys)
    assert code == 0, err
    with Image.open(out) as img:
        assert img.format == kind
        facts = {'PNG': lambda: img.text['featzoo'], 'JPEG': lambda: img.info['comment'],
                 'WEBP': lambda: img.info['xmp']}[kind]()
        assert json.loads(facts)['mode'] == 'top'


def test_visualize_refuses_an_unknown_extension_before_any_work(images, tmp_path, capsys, monkeypatch):
    root, _, _ = images
    from featzoo import factory
    monkeypatch.setattr(factory, 'build_with_weights', lambda *a, **k: pytest.fail('the model was built'))
    out = tmp_path / 'maps.gif'
    code, _, err = run_main(['visualize', MODEL, os.path.join(root, 'gray.png'), '-o', str(out), *SMALL], capsys)
    assert code == 1 and not out.exists()
    assert f"cannot write '{out}': .gif is not a picture format featzoo writes; name the output .png, .jpg, .jpeg " \
           f"or .webp" in err, err


def test_visualize_says_random_weights_and_draws_any_name_legibly(images, tmp_path):
    """The title says when the weights are random; a name in another script is drawn with a font that has its
    glyphs, and a character no font here has is written as its code point instead of an empty box."""
    from featzoo.visualize import _font, covered, visualize
    root, _, _ = images
    photo = tmp_path / '\u732b caf\u00e9 \u0436.png'
    shutil.copy(os.path.join(root, 'gray.png'), photo)
    vis = visualize(MODEL, str(photo), str(tmp_path / 'maps.png'), pretrained=False, input_size=(64, 64), seed=3)
    assert vis.title.startswith(f'{MODEL} (random weights, seed 3) on ')
    font = _font()
    assert all(covered(font, c) for c in vis.title), vis.title
    for char in '\u732b\u00e9\u0436':
        assert (char in vis.title) == covered(font, char)
        assert (f'<U+{ord(char):04X}>' in vis.title) != covered(font, char)
    with Image.open(tmp_path / 'maps.png') as img:
        assert json.loads(img.text['featzoo'])['title'] == vis.title
