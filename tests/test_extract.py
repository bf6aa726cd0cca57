"""featzoo.extract: embeddings of a folder of images (listing, skipping, shards, manifest, resume, readers)."""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

import featzoo
from featzoo.data import create_transform, load_image, resolve_data_config
from featzoo.extract import (
    WeightsUnavailableError, decode_image, describe_image_set_change, fast_decode_size, list_images, read_shard_info,
    shard_name, split_work, weights_digest,
)
from featzoo.extract.files import ImageFile
from helpers import assert_equal

MODEL = 'resnet10t'
SIZE = (64, 64)
SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'samples')
# Files that cannot be decoded, with a word their skip reason must contain.
BROKEN = {'broken/empty.jpg': 'not an image', 'broken/text.png': 'not an image',
          'broken/truncated.jpg': 'truncated', 'broken/garbage.tiff': 'not an image'}
IGNORED = ('notes.txt', 'broken/data.npy', 'sub/README')
FAST = dict(pretrained=False, input_size=SIZE, workers=0, quiet=True)


def make_images(root: str, copies: int = 1) -> Tuple[List[str], Dict[str, str]]:
    """A folder of images in many modes, sizes and formats (some nested), real photos, broken files and
    non-images. Returns (readable relative paths in row order, {broken path: reason word})."""
    rng = np.random.default_rng(0)

    def save(rel: str, img: Image.Image, **kw) -> None:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img.save(path, **kw)

    def noise(h: int, w: int, channels: int = 3) -> np.ndarray:
        return rng.integers(0, 256, (h, w, channels), dtype=np.uint8)

    for c in range(copies):
        p = f'c{c}/' if copies > 1 else ''
        save(f'{p}rgb_wide.jpg', Image.fromarray(noise(40, 90)))
        save(f'{p}rgb_tall.JPEG', Image.fromarray(noise(120, 50)))
        save(f'{p}gray.png', Image.fromarray(noise(70, 70, 1)[..., 0], 'L'))
        save(f'{p}rgba.png', Image.fromarray(noise(50, 60, 4), 'RGBA'))
        save(f'{p}palette.gif', Image.fromarray(noise(33, 45)).convert('P'))
        save(f'{p}cmyk.jpg', Image.fromarray(noise(48, 64, 4), 'CMYK'))
        save(f'{p}deep/a/b/sixteen.png', Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)))
        save(f'{p}deep/a/tiny.bmp', Image.fromarray(noise(1, 1)))
        save(f'{p}deep/photo.webp', Image.fromarray(noise(64, 64)))
        save(f'{p}deep/scan.tif', Image.fromarray(noise(30, 80)))
        save(f'{p}Upper.PNG', Image.fromarray(noise(20, 20)))
        save(f'{p}caf\u00e9.png', Image.fromarray(noise(24, 24)))
    for name in sorted(os.listdir(SAMPLES)):
        if name.endswith('.jpg'):
            os.makedirs(os.path.join(root, 'real'), exist_ok=True)
            shutil.copy(os.path.join(SAMPLES, name), os.path.join(root, 'real', name))
    os.makedirs(os.path.join(root, 'broken'), exist_ok=True)
    open(os.path.join(root, 'broken/empty.jpg'), 'wb').close()
    with open(os.path.join(root, 'broken/text.png'), 'w') as fh:
        fh.write('this is not a picture\n')
    jpeg = os.path.join(root, 'broken/full.tmp')
    Image.fromarray(noise(64, 64)).save(jpeg, format='JPEG')
    with open(jpeg, 'rb') as fh:
        data = fh.read()
    with open(os.path.join(root, 'broken/truncated.jpg'), 'wb') as fh:
        fh.write(data[:len(data) // 2])
    os.unlink(jpeg)
    with open(os.path.join(root, 'broken/garbage.tiff'), 'wb') as fh:
        fh.write(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    for rel in IGNORED:
        os.makedirs(os.path.dirname(os.path.join(root, rel)) or root, exist_ok=True)
        with open(os.path.join(root, rel), 'wb') as fh:
            fh.write(b'not an image, and not named like one')
    readable = sorted(f.path for f in list_images(root) if f.path not in BROKEN)
    return readable, dict(BROKEN)


def reference_model(seed: int = 0) -> torch.nn.Module:
    """The model extract builds for pretrained=False, rebuilt independently."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return featzoo.create_model(MODEL, num_classes=0).eval()


def reference_embeddings(model: torch.nn.Module, root: str, paths: List[str], size=SIZE) -> torch.Tensor:
    """The model's pre-logits on featzoo's own eval transform of each image, one at a time."""
    cfg = resolve_data_config({'input_size': (3,) + tuple(size)}, model=model)
    tf = create_transform(**cfg)
    rows = []
    with torch.no_grad():
        for rel in paths:
            x = tf(load_image(os.path.join(root, rel))).unsqueeze(0)
            rows.append(model.forward_head(model.forward_features(x), pre_logits=True)[0])
    return torch.stack(rows)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('images'))
    readable, broken = make_images(root)
    return root, readable, broken


@pytest.fixture(scope='module')
def baseline(dataset, tmp_path_factory):
    """One uninterrupted single-process run; shards of 5 files so that several shards exist."""
    root, _, _ = dataset
    out = str(tmp_path_factory.mktemp('baseline') / 'out')
    result = featzoo.extract_embeddings(MODEL, root, out, batch_size=4, shard_size=5, **FAST)
    paths, emb = featzoo.read_embeddings(out)
    return out, result, paths, emb


def test_listing_is_plain_string_order_of_image_files(dataset):
    root, readable, broken = dataset
    listed = [f.path for f in list_images(root)]
    assert listed == sorted(listed)
    assert set(listed) == set(readable) | set(broken)
    assert all('/' in p or p == os.path.basename(p) for p in listed)
    assert 'Upper.PNG' in listed and 'rgb_tall.JPEG' in listed
    assert not any(p.endswith(('.txt', '.npy', 'README')) for p in listed)
    with pytest.raises(NotADirectoryError, match='is a file'):
        list_images(os.path.join(root, 'gray.png'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        list_images(os.path.join(root, 'missing'))


def test_rows_equal_model_on_its_own_preprocessing(dataset, baseline):
    root, readable, _ = dataset
    out, result, paths, emb = baseline
    assert paths == readable
    assert emb.dtype == torch.float32 and emb.shape == (len(readable), 512)
    ref = reference_model()
    assert_equal(emb, reference_embeddings(ref, root, paths), 'embeddings vs model on own transform')
    manifest = result.manifest
    assert manifest['weights']['sha256'] == weights_digest(ref)
    assert result.rows == len(readable) and result.processed == len(readable) + len(BROKEN)


def test_broken_files_are_skipped_and_listed_with_reasons(dataset, baseline):
    _, _, broken = dataset
    out, result, _, _ = baseline
    skipped = {s['path']: s['reason'] for s in result.manifest['skipped']}
    assert sorted(skipped) == sorted(broken)
    for path, word in broken.items():
        assert word in skipped[path], (path, skipped[path])
    assert result.skipped == len(broken)


def test_manifest_describes_the_run(baseline):
    out, result, paths, emb = baseline
    with open(os.path.join(out, 'manifest.json')) as fh:
        manifest = json.load(fh)
    assert manifest['format_version'] == 2
    assert manifest['model'] == MODEL
    assert manifest['weights']['source'] == 'random' and manifest['weights']['seed'] == 0
    assert manifest['data_config']['input_size'] == [3, 64, 64]
    assert manifest['data_config']['interpolation'] == 'bicubic'  # resnet10t's published preprocessing
    assert manifest['arguments']['batch_size'] == 4 and manifest['arguments']['shard_size'] == 5
    assert manifest['embedding_dim'] == 512 and manifest['dtype'] == 'float32'
    from featzoo.inference import cpu_features, plan_inference
    plan = plan_inference(cpu_features()).as_dict()
    assert manifest['inference'] == {'plan': plan, 'cpu': {'vendor': cpu_features().vendor,
                                                           'flags': cpu_features().flags()}}
    assert manifest['rows'] == len(paths)
    assert sum(s['rows'] for s in manifest['shards']) == len(paths)
    assert sum(s['files'] for s in manifest['shards']) == len(paths) + len(manifest['skipped'])
    assert all(s['files'] == 5 for s in manifest['shards'][:-1])
    for shard in manifest['shards']:
        info = read_shard_info(os.path.join(out, shard['file']))
        assert info is not None and info.rows == shard['rows'] and len(info.paths) == info.rows


def test_lazy_view_indexes_across_shards(baseline):
    out, _, paths, emb = baseline
    view = featzoo.open_embeddings(out)
    assert len(view) == len(paths) and view.dim == 512 and view.paths == paths
    assert torch.equal(view[0], emb[0]) and torch.equal(view[-1], emb[-1])
    assert torch.equal(view[3:13], emb[3:13])  # crosses shard boundaries
    assert torch.equal(view[::4], emb[::4])
    assert torch.equal(view[[7, 2, 7]], emb[[7, 2, 7]])
    assert torch.equal(view[torch.tensor([1, 0])], emb[[1, 0]])
    assert torch.equal(torch.stack(list(view)), emb)
    shard_paths, shard_rows = zip(*view.iter_shards())
    assert sum(shard_paths, []) == paths and torch.equal(torch.cat(shard_rows), emb)
    with pytest.raises(IndexError, match='out of range'):
        view[len(paths)]
    with pytest.raises(TypeError, match='int, slice'):
        view['a']


def test_same_command_again_redoes_nothing(dataset, baseline):
    root, _, _ = dataset
    out, _, paths, emb = baseline
    before = {n: os.stat(os.path.join(out, 'shards', n)).st_mtime_ns for n in os.listdir(os.path.join(out, 'shards'))}
    # batch size and workers may change between a run and its resumption: they do not change results.
    again = featzoo.extract_embeddings(MODEL, root, out, batch_size=9, shard_size=5, **FAST)
    assert again.processed == 0 and again.resumed_shards == again.shards
    after = {n: os.stat(os.path.join(out, 'shards', n)).st_mtime_ns for n in os.listdir(os.path.join(out, 'shards'))}
    assert after == before
    assert featzoo.read_embeddings(out)[0] == paths


def test_resume_redoes_only_missing_or_damaged_shards(dataset, baseline, tmp_path):
    root, _, _ = dataset
    _, _, paths, emb = baseline
    out = str(tmp_path / 'out')
    featzoo.extract_embeddings(MODEL, root, out, batch_size=4, shard_size=5, **FAST)
    shard_dir = os.path.join(out, 'shards')
    names = sorted(os.listdir(shard_dir))
    # What a kill leaves behind: no manifest, a missing shard, a half-written temporary, and (from a disk error) a
    # truncated shard under its final name.
    os.unlink(os.path.join(out, 'manifest.json'))
    os.unlink(os.path.join(shard_dir, names[1]))
    with open(os.path.join(shard_dir, '.tmp-' + names[1] + '.abc'), 'wb') as fh:
        fh.write(b'\0' * 100)
    with open(os.path.join(shard_dir, names[3]), 'rb') as fh:
        data = fh.read()
    with open(os.path.join(shard_dir, names[3]), 'wb') as fh:
        fh.write(data[:len(data) - 10])
    with pytest.raises(RuntimeError, match='unfinished'):
        featzoo.read_embeddings(out)
    kept = {n: os.stat(os.path.join(shard_dir, n)).st_ino for n in names if n not in (names[1], names[3])}
    result = featzoo.extract_embeddings(MODEL, root, out, batch_size=4, shard_size=5, **FAST)
    assert result.resumed_shards == len(names) - 2
    assert result.processed == 10
    assert sorted(os.listdir(shard_dir)) == names  # the temporary is gone
    assert {n: os.stat(os.path.join(shard_dir, n)).st_ino for n in kept} == kept
    got_paths, got = featzoo.read_embeddings(out)
    assert got_paths == paths
    assert_equal(got, emb, 'resumed vs uninterrupted')


def test_other_arguments_or_images_in_same_output_are_errors(dataset, baseline, tmp_path):
    root, _, _ = dataset
    images = str(tmp_path / 'images')
    shutil.copytree(root, images)
    out = str(tmp_path / 'out')
    featzoo.extract_embeddings(MODEL, images, out, shard_size=50, **FAST)
    with pytest.raises(ValueError, match=r'normalize: False before, True now\. To continue it, pass '
                                         r'normalize=False; .*overwrite=True to start over'):
        featzoo.extract_embeddings(MODEL, images, out, shard_size=50, normalize=True, **FAST)
    with pytest.raises(ValueError, match=r'shard_size: 50 before, 7 now\. To continue it, pass shard_size=50;'):
        featzoo.extract_embeddings(MODEL, images, out, shard_size=7, **FAST)
    with pytest.raises(ValueError, match=r'weights\.seed: 0 before, 1 now\. To continue it, pass seed=0;'):
        featzoo.extract_embeddings(MODEL, images, out, shard_size=50, seed=1, **FAST)
    # a changed image set with changed settings is still refused, and nothing is moved
    Image.new('RGB', (9, 9)).save(os.path.join(images, 'zz_new.png'))
    with pytest.raises(ValueError, match=r'normalize: False before, True now'):
        featzoo.extract_embeddings(MODEL, images, out, shard_size=50, normalize=True, **FAST)
    assert not os.path.exists(os.path.join(out, 'previous')) and os.path.isfile(os.path.join(out, 'manifest.json'))
    result = featzoo.extract_embeddings(MODEL, images, out, shard_size=50, overwrite=True, **FAST)
    paths, _ = featzoo.read_embeddings(out)
    assert 'zz_new.png' in paths and result.resumed_shards == 0 and result.processed == len(list_images(images))


def test_normalize_and_float16_storage(dataset, baseline, tmp_path):
    root, _, _ = dataset
    _, _, paths, emb = baseline
    out = str(tmp_path / 'out')
    featzoo.extract_embeddings(MODEL, root, out, normalize=True, dtype='float16', shard_size=50, **FAST)
    got_paths, got = featzoo.read_embeddings(out)
    assert got_paths == paths and got.dtype == torch.float16
    assert featzoo.open_embeddings(out)[0].dtype == torch.float16
    # float16 storage keeps 11 significant bits: each value moves by at most 2**-11 of itself (measured: 6.0e-5
    # on values below 1), and so does the norm
    assert torch.allclose(got.float().norm(dim=1), torch.ones(len(paths)), atol=2 ** -11)
    assert_equal(got.float(), torch.nn.functional.normalize(emb, dim=1), 'normalized float16', rtol=2 ** -11)


def test_workers_batch_size_and_checkpoint(dataset, baseline, tmp_path):
    """Decoding in worker processes gives the same rows; a checkpoint (any class count) supplies the weights."""
    root, _, _ = dataset
    _, _, paths, emb = baseline
    model = reference_model(seed=5)
    trained = featzoo.create_model(MODEL, num_classes=10)
    trained.load_state_dict(model.state_dict(), strict=False)
    from safetensors.torch import save_file
    ckpt = str(tmp_path / 'weights.safetensors')
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, ckpt)
    out = str(tmp_path / 'out')
    result = featzoo.extract_embeddings(MODEL, root, out, checkpoint=ckpt, input_size=SIZE, workers=2, batch_size=3,
                                        shard_size=6, quiet=True)
    got_paths, got = featzoo.read_embeddings(out)
    assert got_paths == paths
    assert_equal(got, reference_embeddings(model, root, paths), 'checkpoint weights')
    assert result.manifest['weights']['source'] == 'checkpoint'
    assert result.manifest['weights']['file'] == os.path.abspath(ckpt)


def test_module_instead_of_name(dataset, baseline, tmp_path):
    root, _, _ = dataset
    _, _, paths, emb = baseline
    out = str(tmp_path / 'out')
    module = reference_model()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = featzoo.extract_embeddings(module, root, out, input_size=SIZE, workers=0, quiet=True)
    assert result.manifest['weights']['source'] == 'module'
    assert_equal(featzoo.read_embeddings(out)[1], emb, 'module')
    # a caller's module runs as given: no batch norm folded away, no weight changed
    after = module.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_named_models_run_optimized_unless_told_not_to(dataset, baseline, tmp_path, monkeypatch):
    from featzoo.extract import pipeline
    root, _, _ = dataset
    _, _, paths, emb = baseline
    seen = []
    original = pipeline._prepare_for_inference

    def recording(*args, **kwargs):
        prepared = original(*args, **kwargs)
        seen.append(type(prepared).__name__)
        return prepared

    monkeypatch.setattr(pipeline, '_prepare_for_inference', recording)
    featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'optimized'), **FAST)
    eager = str(tmp_path / 'eager')
    featzoo.extract_embeddings(MODEL, root, eager, **dict(FAST, optimize=False))
    assert seen == ['InferenceModel', 'ResNet']
    assert_equal(featzoo.read_embeddings(eager)[1], emb, 'eager vs optimized')
    with pytest.raises(TypeError, match='optimize'):
        featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'bad'), **dict(FAST, optimize='no'))


PROJECTION = 'vit_xsmall_patch16_clip_224.tinyclip_yfcc15m'  # the smallest tag whose head is a CLIP projection


def test_projection_heads_store_the_heads_output_unless_told_not_to(tmp_path, monkeypatch):
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('astronaut.jpg', 'coffee.jpg', 'rocket.jpg'):
        shutil.copy(os.path.join(SAMPLES, name), images / name)
    references = {}
    for num_classes in (None, 0):  # random weights are drawn for the model as extract builds it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            references[num_classes] = featzoo.create_model(PROJECTION, num_classes=num_classes).eval()
    tf = create_transform(**resolve_data_config({}, model=references[None]))
    batch = torch.stack([tf(load_image(str(images / n))) for n in ('astronaut.jpg', 'coffee.jpg', 'rocket.jpg')])
    with torch.no_grad():
        projected, pooled = references[None](batch), references[0](batch)
    assert projected.shape[1] == 512 != pooled.shape[1]

    run = dict(pretrained=False, workers=0, quiet=True)
    head = featzoo.extract_embeddings(PROJECTION, str(images), str(tmp_path / 'head'), **run)
    assert head.manifest['output'] == 'head' and head.manifest['embedding_dim'] == 512
    assert_equal(featzoo.read_embeddings(str(tmp_path / 'head'))[1], projected, 'head output')
    pre = featzoo.extract_embeddings(PROJECTION, str(images), str(tmp_path / 'pre'), pre_logits=True, **run)
    assert pre.manifest['output'] == 'pre_logits'
    assert_equal(featzoo.read_embeddings(str(tmp_path / 'pre'))[1], pooled, 'pre-logits')
    # the choice decides the rows: resuming with the other one is refused, naming the flag that continues the job
    with pytest.raises(ValueError, match=r"rows are the head's output before, the pre-logits now.*To continue "
                                         r"it, pass pre_logits=False"):
        featzoo.extract_embeddings(PROJECTION, str(images), str(tmp_path / 'head'), pre_logits=True, **run)
    with pytest.raises(TypeError, match="pre_logits must be"):
        featzoo.extract_embeddings(PROJECTION, str(images), str(tmp_path / 'x'), pre_logits='yes', **run)
    # the command line: --pre-logits opts out of the projection
    from featzoo.cli import main
    assert main(['extract', PROJECTION, str(images), '-o', str(tmp_path / 'cli'), '--no-pretrained', '--workers',
                 '0', '--quiet', '--pre-logits']) == 0
    from featzoo.extract import load_manifest
    assert load_manifest(str(tmp_path / 'cli'))['output'] == 'pre_logits'


def test_classifier_heads_store_pre_logits_and_say_so(baseline, dataset, tmp_path):
    _, result, _, _ = baseline
    assert result.manifest['output'] == 'pre_logits'
    root, _, _ = dataset
    logits = featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'logits'), pre_logits=False, shard_size=50,
                                        **FAST)
    assert logits.manifest['output'] == 'head' and logits.manifest['embedding_dim'] == 1000


def test_autocast_bf16_on_cpu(dataset, baseline, tmp_path):
    root, _, _ = dataset
    _, _, paths, emb = baseline
    out = str(tmp_path / 'out')
    result = featzoo.extract_embeddings(MODEL, root, out, autocast='bf16', shard_size=50, **FAST)
    assert result.manifest['arguments']['autocast'] == 'bf16'
    got = featzoo.read_embeddings(out)[1]
    assert got.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(got, emb, dim=1)
    assert cos.min() > 0.97, cos.min()
    from featzoo.inference import cpu_features
    if cpu_features().native_bf16:
        assert not torch.equal(got, emb)  # it really ran in bfloat16
    else:  # no native bfloat16: float32 (with one warning), not autocast's slow emulation
        assert_equal(got, emb, 'bf16 requested on a CPU without native bf16', rtol=1e-4)
    with pytest.raises(ValueError, match="CUDA only.*'bf16'"):
        featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'x'), autocast='fp16', device='cpu', **FAST)


def test_fast_decode_reduces_large_jpegs_only(tmp_path):
    big = str(tmp_path / 'big.jpg')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(big)
    target = fast_decode_size({'input_size': (3, 64, 64), 'crop_pct': 0.875})
    assert target == 74
    small = decode_image(big, draft_size=target)
    assert small.size == (100, 75) and min(small.size) >= target  # 1/8 scale: the smallest that stays >= 74
    assert decode_image(big).size == (800, 600)
    assert decode_image(big, draft_size=400).size == (800, 600)  # not much larger than the target: full size
    png = str(tmp_path / 'a.png')
    Image.new('RGB', (600, 600)).save(png)
    assert decode_image(png, draft_size=target).size == (600, 600)  # only JPEG decoding has reduced scales
    images = tmp_path / 'images'
    images.mkdir()
    shutil.copy(big, images / 'big.jpg')
    out = str(tmp_path / 'out')
    result = featzoo.extract_embeddings(MODEL, str(images), out, fast_decode=True, **FAST)
    assert result.rows == 1 and result.manifest['arguments']['fast_decode'] is True
    exact = reference_embeddings(reference_model(), str(images), ['big.jpg'])
    cos = torch.nn.functional.cosine_similarity(featzoo.read_embeddings(out)[1], exact, dim=1)
    assert cos.item() > 0.9


def test_missing_weights_stop_before_any_work(dataset, tmp_path, monkeypatch):
    root, _, _ = dataset
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'empty-cache'))
    out = str(tmp_path / 'out')
    with pytest.raises(WeightsUnavailableError, match=r"resnet10t.*pass checkpoint='weights.safetensors', download "
                                                      r"them .*`hf download timm/resnet10t.c3_in1k`.*HF_HUB_CACHE.*"
                                                      r"pass pretrained=False") as caught:
        featzoo.extract_embeddings(MODEL, root, out, input_size=SIZE, workers=0, quiet=True)
    assert '--' not in str(caught.value)  # Python callers get Python arguments, not command-line flags
    assert not os.path.exists(out)


def test_model_without_published_weights_needs_a_source(dataset, tmp_path):
    root, _, _ = dataset
    unpublished = [n for n in featzoo.list_models() if not featzoo.get_pretrained_cfg(n)]
    if not unpublished:
        pytest.skip('every registered model has published weights')
    out = str(tmp_path / 'out')
    with pytest.raises(WeightsUnavailableError, match="no published pretrained weights.*checkpoint='weights"):
        featzoo.extract_embeddings(unpublished[0], root, out, input_size=SIZE, workers=0, quiet=True)
    assert not os.path.exists(out)


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(batch_size=0), ValueError, 'batch_size=0'),
    (dict(batch_size='8'), TypeError, 'batch_size'),
    (dict(workers=-1), ValueError, 'workers=-1'),
    (dict(dtype='int8'), ValueError, "dtype='int8'.*'float32', 'float16'"),
    (dict(device='tpu'), ValueError, "device='tpu'.*'cpu', 'cuda'"),
    (dict(autocast='fp8'), ValueError, "autocast='fp8'.*'none', 'bf16', 'fp16'"),
    (dict(input_size=(0, 5)), ValueError, r'input_size.*\(0, 5\)'),
    (dict(normalize='yes'), TypeError, 'normalize'),
    (dict(shard_size=0), ValueError, 'shard_size=0'),
    (dict(checkpoint='/nonexistent.safetensors'), FileNotFoundError, 'nonexistent.safetensors'),
])
def test_bad_options_name_the_value(dataset, tmp_path, kwargs, error, words):
    root, _, _ = dataset
    options = dict(FAST, **kwargs)
    with pytest.raises(error, match=words):
        featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'out'), **options)
    assert not os.path.exists(tmp_path / 'out')


def test_bad_folders(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(FileNotFoundError, match='image folder.*does not exist'):
        featzoo.extract_embeddings(MODEL, str(tmp_path / 'nope'), str(tmp_path / 'out'), **FAST)
    with pytest.raises(NotADirectoryError, match='IMAGES must be a folder'):
        featzoo.extract_embeddings(MODEL, os.path.join(root, 'gray.png'), str(tmp_path / 'out'), **FAST)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'a.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='found no image files'):
        featzoo.extract_embeddings(MODEL, str(tmp_path / 'empty'), str(tmp_path / 'out'), **FAST)
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'thesis.tex').write_text('x')
    with pytest.raises(FileExistsError, match=r"other files \(thesis.tex\).*--overwrite"):
        featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'busy'), **FAST)
    (tmp_path / 'file').write_text('x')
    with pytest.raises(NotADirectoryError, match='is a file'):
        featzoo.extract_embeddings(MODEL, root, str(tmp_path / 'file'), **FAST)
    with pytest.raises(FileNotFoundError, match='not the output of'):
        featzoo.read_embeddings(str(tmp_path / 'busy'))


def test_image_set_change_description_and_work_split():
    before = [ImageFile('a.jpg', 1, 1), ImageFile('b.jpg', 1, 1), ImageFile('c.jpg', 1, 1)]
    after = [ImageFile('a.jpg', 1, 1), ImageFile('b.jpg', 2, 1), ImageFile('d.jpg', 1, 1), ImageFile('e.jpg', 1, 1)]
    assert describe_image_set_change(before, after) == \
        "2 new files ('d.jpg', 'e.jpg'); 1 removed file ('c.jpg'); 1 modified file ('b.jpg')"
    shards = list(range(10))
    parts = [split_work(shards, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == shards and max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match='rank 3'):
        split_work(shards, 3, 3)
    assert shard_name(7, 100001) == 'shard-000007.safetensors'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_path_matches_cpu(dataset, baseline, tmp_path):
    root, _, _ = dataset
    _, _, paths, emb = baseline
    out = str(tmp_path / 'cuda')
    result = featzoo.extract_embeddings(MODEL, root, out, device='cuda', pretrained=False, input_size=SIZE,
                                        workers=2, quiet=True)
    assert result.manifest['arguments']['device'] == 'cuda'
    got_paths, got = featzoo.read_embeddings(out)
    assert got_paths == paths
    # cuDNN runs float32 convolutions in TF32 by default (torch.backends.cudnn.allow_tf32): 10-bit mantissas,
    # about 1e-3 relative; not measured here (no GPU in this project's test host)
    assert_equal(got, emb, 'cuda vs cpu', rtol=1e-3)
    for mode in ('fp16', 'bf16'):
        out = str(tmp_path / mode)
        featzoo.extract_embeddings(MODEL, root, out, device='cuda', autocast=mode, **FAST)
        cos = torch.nn.functional.cosine_similarity(featzoo.read_embeddings(out)[1], emb, dim=1)
        assert cos.min() > 0.97, (mode, cos.min())


def test_shard_whose_files_are_all_broken(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('RGB', (30, 20), 'red').save(images / 'a.png')
    (images / 'b.jpg').write_bytes(b'')
    (images / 'c.jpg').write_bytes(b'GIF89a')
    Image.new('L', (20, 30), 128).save(images / 'd.png')
    out = str(tmp_path / 'out')
    result = featzoo.extract_embeddings(MODEL, str(images), out, shard_size=1, dtype='float16', **FAST)
    assert [s['rows'] for s in result.manifest['shards']] == [1, 0, 0, 1]
    paths, emb = featzoo.read_embeddings(out)
    assert paths == ['a.png', 'd.png'] and emb.shape == (2, 512) and emb.dtype == torch.float16
    view = featzoo.open_embeddings(out)
    assert torch.equal(view[1], emb[1]) and torch.equal(view[0:2], emb)
    assert [len(p) for p, _ in view.iter_shards()] == [1, 0, 0, 1]


# ---- reliability (issue 21): real folders, real files, concurrent runs ---------------------------------------------


def test_any_file_name_is_extracted_and_given_back_exactly(tmp_path, monkeypatch):
    """A name that is not valid UTF-8 (byte 0xe9, as old tools write on Linux) is one row like any other, and the
    readers give back the very str os.listdir gives, surrogate included; a skipped file keeps its name too."""
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('RGB', (20, 20), 'red').save(images / 'ok.png')
    folder = os.fsencode(str(images))
    with open(folder + b'/caf\xe9.png', 'wb') as fh:
        Image.new('RGB', (24, 20), 'blue').save(fh, format='PNG')
    os.mkdir(folder + b'/d\xff')
    with open(folder + b'/d\xff/broken\xe9.jpg', 'wb') as fh:
        fh.write(b'not an image')
    names = sorted(f.path for f in list_images(str(images)))
    assert names == ['caf\udce9.png', 'd\udcff/broken\udce9.jpg', 'ok.png']
    out = str(tmp_path / 'out')
    result = featzoo.extract_embeddings(MODEL, str(images), out, shard_size=2, **FAST)
    assert result.rows == 2
    paths, emb = featzoo.read_embeddings(out)
    assert paths == ['caf\udce9.png', 'ok.png'] and emb.shape == (2, 512)
    assert featzoo.open_embeddings(out).paths == paths
    assert [s['path'] for s in featzoo.extract.load_manifest(out)['skipped']] == ['d\udcff/broken\udce9.jpg']
    ref = reference_embeddings(reference_model(), str(images), paths)
    assert_equal(emb, ref, 'rows of non-UTF-8 names')
    # A shard that cannot be written names its file, the images it holds and the cause.
    from featzoo.extract import shards

    def disk_full(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(shards, 'save_file', disk_full)
    with pytest.raises(featzoo.extract.ShardWriteError,
                       match=r"cannot write shard '.*shard-00000.safetensors' \(images 'caf\\udce9.png' .. "
                             r"'d\\udcff/broken\\udce9.jpg'\): OSError: .*No space left"):
        featzoo.extract_embeddings(MODEL, str(images), str(tmp_path / 'full'), shard_size=2, **FAST)


def test_second_run_on_the_same_output_fails_at_once_naming_the_first(dataset, tmp_path):
    """An advisory lock on OUT: a second run (even with overwrite) fails at once naming the holder and touches
    nothing; when the holder dies, even by SIGKILL, the kernel releases it and the next run goes ahead."""
    import signal
    import subprocess
    import sys
    from featzoo.extract import OutputInUseError
    root, _, _ = dataset
    out = str(tmp_path / 'out')
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time\nfrom featzoo.extract import OutputLock\n'
         'OutputLock(sys.argv[1]).acquire()\nprint("locked", flush=True)\ntime.sleep(600)', out],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b'locked'
        for overwrite in (False, True):
            with pytest.raises(OutputInUseError, match=rf'{out}.*in use by another featzoo extract: process '
                                                       rf'{holder.pid} on host'):
                featzoo.extract_embeddings(MODEL, root, out, overwrite=overwrite, **FAST)
        assert os.listdir(out) == ['.featzoo-extract.lock']
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = featzoo.extract_embeddings(MODEL, root, out, **FAST)
    assert result.rows > 0 and result.resumed_shards == 0


def test_every_argument_that_changes_the_numbers_is_in_the_job_record(dataset, tmp_path):
    """optimize, compile and max_pixels are part of the job: changing one on resume is an error naming it; the
    arguments that may change are exactly those the README and --help list."""
    from featzoo import cli
    from featzoo.extract import RESUMABLE_CHANGES
    root, _, _ = dataset
    out = str(tmp_path / 'out')
    featzoo.extract_embeddings(MODEL, root, out, shard_size=50, **FAST)
    with open(os.path.join(out, 'job.json')) as fh:
        job = json.load(fh)['job']
    assert (job['optimize'], job['compile'], job['max_pixels']) == (True, False, 89_478_485)
    with pytest.raises(ValueError, match=r'optimize: True before, False now.*only batch_size, workers, device, '
                                         r'quiet may change'):
        featzoo.extract_embeddings(MODEL, root, out, shard_size=50, **dict(FAST, optimize=False))
    with pytest.raises(ValueError, match=r'max_pixels: 89478485 before, 1000 now'):
        featzoo.extract_embeddings(MODEL, root, out, shard_size=50, max_pixels=1000, **FAST)
    again = featzoo.extract_embeddings(MODEL, root, out, shard_size=50, batch_size=3, **dict(FAST, workers=1))
    assert again.processed == 0
    assert RESUMABLE_CHANGES == ('batch_size', 'workers', 'device', 'quiet')
    parser = cli.build_parser()
    epilog = ' '.join(cli._subparser(parser, 'extract').epilog.split())
    assert '--batch-size, --workers, --device and --quiet may change between runs' in epilog
    readme = open(os.path.join(os.path.dirname(SAMPLES), 'README.md'), encoding='utf-8').read()
    assert 'only `--batch-size`, `--workers`, `--device` and `--quiet` may change between the two' in \
        ' '.join(readme.split())


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header promising ``width`` x ``height`` RGB pixels, with a few bytes of image data: a file
    of a few hundred bytes that would decode to gigabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64))
            + chunk(b'IEND', b''))


def test_images_above_the_pixel_limit_are_skipped_before_decoding(tmp_path):
    """An image bomb (a tiny file promising 12000 x 12000 pixels) is skipped with its reason in the manifest, by
    its header alone; the limit is settable (also above Pillow's own refusal at twice its limit) and recorded."""
    images = tmp_path / 'images'
    images.mkdir()
    (images / 'bomb.png').write_bytes(_png_header_only(12000, 12000))
    (images / 'huge.png').write_bytes(_png_header_only(20000, 20000))
    Image.new('RGB', (30, 20), 'green').save(images / 'small.png')
    out = str(tmp_path / 'out')
    result = featzoo.extract_embeddings(MODEL, str(images), out, **FAST)
    reasons = {s['path']: s['reason'] for s in result.manifest['skipped']}
    assert result.rows == 1 and sorted(reasons) == ['bomb.png', 'huge.png']
    assert reasons['bomb.png'] == ('ImageTooLargeError: 12000 x 12000 = 144000000 pixels, over the limit of '
                                   '89478485 (max_pixels; --max-pixels on the command line); skipped without '
                                   'decoding')
    assert '400000000 pixels, over the limit' in reasons['huge.png']
    # a higher limit lets the header through: the file is then read (and its missing pixel data is the reason)
    result = featzoo.extract_embeddings(MODEL, str(images), str(tmp_path / 'high'), max_pixels=10 ** 9, **FAST)
    reasons = {s['path']: s['reason'] for s in result.manifest['skipped']}
    assert 'over the limit' not in reasons['huge.png'] and 'too large' not in reasons['huge.png'], reasons
    result = featzoo.extract_embeddings(MODEL, str(images), str(tmp_path / 'low'), max_pixels=500, **FAST)
    assert result.rows == 0 and 'small.png' in {s['path'] for s in result.manifest['skipped']}
    with open(os.path.join(tmp_path / 'low', 'job.json')) as fh:
        assert json.load(fh)['job']['max_pixels'] == 500


@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_output_files_follow_the_umask(dataset, tmp_path, umask):
    root, _, _ = dataset
    out = str(tmp_path / 'out')
    old = os.umask(umask)
    try:
        featzoo.extract_embeddings(MODEL, root, out, shard_size=20, **FAST)
    finally:
        os.umask(old)
    files = [os.path.join(d, n) for d, _, names in os.walk(out) for n in names if n != '.featzoo-extract.lock']
    assert any('shard-' in f for f in files) and any(f.endswith('job.json') for f in files)
    modes = {os.path.relpath(f, out): oct(os.stat(f).st_mode & 0o777) for f in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_reader_refuses_a_tampered_manifest(dataset, baseline, tmp_path):
    """Manifest entries must name the shards extract wrote, inside OUT, and each shard must be that shard of that
    job: an entry pointing elsewhere, a shard copied in from another job, or counts that do not add up are errors."""
    root, _, _ = dataset
    out, _, paths, _ = baseline
    other = str(tmp_path / 'other')
    featzoo.extract_embeddings(MODEL, root, other, batch_size=4, shard_size=5, seed=3, **FAST)
    outside = tmp_path / 'secret.safetensors'
    shutil.copy(os.path.join(other, 'shards', 'shard-00000.safetensors'), outside)

    def tampered(edit) -> str:
        copy = str(tmp_path / f'copy{len(os.listdir(tmp_path))}')
        shutil.copytree(out, copy)
        path = os.path.join(copy, 'manifest.json')
        with open(path) as fh:
            manifest = json.load(fh)
        edit(manifest, copy)
        with open(path, 'w') as fh:
            json.dump(manifest, fh)
        return copy

    cases = [
        (lambda m, d: m['shards'][0].update(file=str(outside)), r"shard 0 is '/.*secret.safetensors'; extract "
                                                                 r"writes it as 'shards/shard-00000.safetensors'"),
        (lambda m, d: m['shards'][1].update(file='shards/../../secret.safetensors'), 'shard 1 is'),
        (lambda m, d: m.update(rows=m['rows'] + 1), 'rows but its shards add up to'),
        (lambda m, d: m.update(dtype='load'), "dtype is 'load'"),
        (lambda m, d: shutil.copy(os.path.join(other, 'shards', 'shard-00000.safetensors'),
                                  os.path.join(d, 'shards', 'shard-00000.safetensors')),
         r"shard-00000.safetensors' does not belong to this extraction \(job '[0-9a-f]+' in the file"),
        (lambda m, d: shutil.copy(os.path.join(d, 'shards', 'shard-00001.safetensors'),
                                  os.path.join(d, 'shards', 'shard-00000.safetensors')),
         r"does not belong to this extraction \(index 1 in the file, 0 in the manifest"),
    ]
    for edit, words in cases:
        copy = tampered(edit)
        with pytest.raises(RuntimeError, match=words):
            featzoo.read_embeddings(copy)
        with pytest.raises(RuntimeError, match=words):
            view = featzoo.open_embeddings(copy)
            view[0:len(paths)]


def test_a_file_replaced_with_the_same_size_and_mtime_is_seen(dataset, tmp_path):
    """cp -p style replacement (same inode, same size, mtime set back) changes the ctime: the rerun re-embeds it."""
    root, _, _ = dataset
    images = str(tmp_path / 'images')
    shutil.copytree(root, images)
    out = str(tmp_path / 'out')
    featzoo.extract_embeddings(MODEL, images, out, shard_size=50, **FAST)
    target = os.path.join(images, 'deep', 'a', 'tiny.bmp')
    before = os.stat(target)
    with open(target, 'r+b') as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xff]))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    result = featzoo.extract_embeddings(MODEL, images, out, shard_size=50, **FAST)
    assert result.update == {'new': 0, 'changed': 1, 'removed': 0, 'kept': len(list_images(images)) - 1}
    assert result.processed == 1


def test_every_output_file_is_flushed_with_its_folder(dataset, tmp_path, monkeypatch):
    """Durability: each shard, the job record, the listing and the manifest reach the disk through a flushed
    temporary, and the folder that names them is flushed after the rename."""
    root, _, _ = dataset
    seen: List[str] = []
    real = os.fsync

    def recording(fd):
        seen.append(os.path.realpath(f'/proc/self/fd/{fd}'))
        return real(fd)

    if not os.path.isdir('/proc/self/fd'):
        pytest.skip('needs /proc/self/fd to name what is flushed')
    monkeypatch.setattr(os, 'fsync', recording)
    out = str(tmp_path / 'out')
    featzoo.extract_embeddings(MODEL, root, out, shard_size=20, **FAST)
    finals = [os.path.join(d, n) for d, _, names in os.walk(out) for n in names if n != '.featzoo-extract.lock']
    assert len(finals) >= 5
    for final in finals:
        folder, name = os.path.split(os.path.realpath(final))
        temps = [i for i, p in enumerate(seen) if os.path.basename(p).startswith(f'.tmp-{name}.')]
        assert temps and folder in seen[temps[-1] + 1:], (final, seen)


# ---- incremental extraction: a folder that grows, shrinks and changes --------------------------------------------


def _small_folder(root: str, names, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for name in names:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(path)


def _rewrite(path: str, seed: int) -> None:
    """New pixels, same name: what an edited photo looks like."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(path)


def test_a_grown_shrunk_and_changed_folder_embeds_only_what_is_new(tmp_path):
    """3 new, 1 changed, 2 removed: only the 4 new or changed files are decoded; every kept row is bit-identical
    to the first run's, rows stay sorted by relative path, the numbers equal a fresh extraction, and the summary
    says what happened. A broken file that did not change keeps its skip reason without being read again."""
    images, out = str(tmp_path / 'images'), str(tmp_path / 'out')
    first = [f'p{i:02d}.png' for i in range(9)] + ['sub/q.png']
    _small_folder(images, first)
    open(os.path.join(images, 'empty.jpg'), 'wb').close()
    kw = dict(FAST, shard_size=3, input_size=(32, 32), optimize=False)
    featzoo.extract_embeddings(MODEL, images, out, **kw)
    paths0, emb0 = featzoo.read_embeddings(out)
    _small_folder(images, ['a_first.png', 'p04b.png', 'zz/last.png'], seed=1)
    os.unlink(os.path.join(images, 'p02.png'))
    os.unlink(os.path.join(images, 'sub/q.png'))
    _rewrite(os.path.join(images, 'p07.png'), seed=2)
    decoded: List[str] = []
    real = featzoo.extract.dataset.decode_image

    def counting(path, *args, **kwargs):
        decoded.append(os.path.relpath(path, images))
        return real(path, *args, **kwargs)

    import unittest.mock
    with unittest.mock.patch.object(featzoo.extract.dataset, 'decode_image', counting):
        result = featzoo.extract_embeddings(MODEL, images, out, **kw)
    assert result.update == {'new': 3, 'changed': 1, 'removed': 2, 'kept': 8}
    assert sorted(decoded) == ['a_first.png', 'p04b.png', 'p07.png', 'zz/last.png']
    assert result.processed == 4
    assert result.summary().startswith('featzoo extract: 3 new, 1 changed, 2 removed; 8 kept. 11 rows, 1 skipped')
    paths1, emb1 = featzoo.read_embeddings(out)
    assert paths1 == sorted(paths1) == sorted(set(paths0) - {'p02.png', 'sub/q.png'}
                                             | {'a_first.png', 'p04b.png', 'zz/last.png'})
    before = dict(zip(paths0, emb0))
    for path, row in zip(paths1, emb1):
        if path in before and path != 'p07.png':
            assert torch.equal(row, before[path]), path  # copied, not recomputed
    assert not torch.equal(emb1[paths1.index('p07.png')], before['p07.png'])
    assert featzoo.extract.load_manifest(out)['skipped'][0]['path'] == 'empty.jpg'
    assert not os.path.exists(os.path.join(out, 'previous'))
    fresh = str(tmp_path / 'fresh')
    featzoo.extract_embeddings(MODEL, images, fresh, **kw)
    assert featzoo.read_embeddings(fresh)[0] == paths1
    assert_equal(featzoo.read_embeddings(fresh)[1], emb1, 'incremental vs fresh')
    again = featzoo.extract_embeddings(MODEL, images, out, **kw)
    assert again.update is None and again.processed == 0
    assert again.summary().startswith('featzoo extract: nothing to do: 11 rows, 1 skipped (reasons in ')


class _Killed(BaseException):
    """Stands for SIGKILL inside one process: no `except Exception` handler sees it."""


def _tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten()).eval()


def test_an_update_killed_at_any_step_finishes_on_the_rerun(tmp_path, monkeypatch):
    """The update is killed at every rename it makes (each record, listing, moved shard, new shard and the
    manifest): the same command then finishes it, with the very rows and counts of an uninterrupted update."""
    images = str(tmp_path / 'images')
    _small_folder(images, [f'p{i}.png' for i in range(6)])
    module = _tiny_module()
    kw = dict(input_size=(16, 16), workers=0, quiet=True, shard_size=2)
    template = str(tmp_path / 'template')
    featzoo.extract_embeddings(module, images, template, **kw)
    _small_folder(images, ['n0.png', 'p9.png'], seed=1)
    os.unlink(os.path.join(images, 'p3.png'))
    _rewrite(os.path.join(images, 'p1.png'), seed=3)
    reference = str(tmp_path / 'reference')
    shutil.copytree(template, reference)
    expected = featzoo.extract_embeddings(module, images, reference, **kw)
    assert expected.update == {'new': 2, 'changed': 1, 'removed': 1, 'kept': 4}
    want = featzoo.read_embeddings(reference)
    kept = {p: r for p, r in zip(*featzoo.read_embeddings(template)) if p not in ('p1.png', 'p3.png')}
    real_replace = os.replace
    step = 0
    while True:
        out = str(tmp_path / f'out{step}')
        shutil.copytree(template, out)
        calls = [0]

        def dying(src, dst, _step=step, _calls=calls):
            if _calls[0] == _step:
                raise _Killed(dst)
            _calls[0] += 1
            return real_replace(src, dst)

        monkeypatch.setattr(os, 'replace', dying)
        try:
            featzoo.extract_embeddings(module, images, out, **kw)
            finished = True
        except _Killed:
            finished = False
        monkeypatch.setattr(os, 'replace', real_replace)
        if finished:
            break
        result = featzoo.extract_embeddings(module, images, out, **kw)
        got = featzoo.read_embeddings(out)
        assert got[0] == want[0], step
        for path, row, ref in zip(got[0], got[1], want[1]):
            if path in kept:  # bit for bit; recomputed rows may differ in the last bits with the batch they ran in
                assert torch.equal(row, kept[path]), (step, path)
        assert_equal(got[1], want[1], f'killed at step {step}')
        assert result.rows == expected.rows and not os.path.exists(os.path.join(out, 'previous')), step
        if result.processed:  # the kill came after the new job was recorded: the rerun reports that update
            assert result.update == expected.update, step
        step += 1
    assert step >= 9  # two records, three moved shards, a listing, a job record, four shards, the manifest


KILLED_UPDATE = '''
import os, signal, sys
import torch
import featzoo
images, out, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real, calls = os.replace, [0]
def dying(src, dst):
    if calls[0] == at:  # the process dies as the kernel would kill it: no cleanup of any kind
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    return real(src, dst)
os.replace = dying
torch.manual_seed(0)
module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
featzoo.extract_embeddings(module.eval(), images, out, input_size=(16, 16), workers=0, quiet=True, shard_size=2)
'''


def test_an_update_killed_by_sigkill_resumes(tmp_path):
    """A real SIGKILL in the middle of moving the old shards aside (the lock is released by the kernel, a moved
    and an unmoved shard coexist): the rerun finishes the update and keeps the old rows bit for bit."""
    import subprocess
    import sys
    images, out = str(tmp_path / 'images'), str(tmp_path / 'out')
    _small_folder(images, [f'p{i}.png' for i in range(6)])
    module = _tiny_module()
    kw = dict(input_size=(16, 16), workers=0, quiet=True, shard_size=2)
    featzoo.extract_embeddings(module, images, out, **kw)
    before = dict(zip(*featzoo.read_embeddings(out)))
    _small_folder(images, ['a.png', 'q.png', 'z.png'], seed=1)
    # step 3: after the old record, the old listing and one of the three shards went to previous/
    proc = subprocess.run([sys.executable, '-c', KILLED_UPDATE, images, out, '3'], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(os.listdir(os.path.join(out, 'shards'))) == 2 and not os.path.exists(os.path.join(out, 'manifest.json'))
    result = featzoo.extract_embeddings(module, images, out, **kw)
    assert result.update == {'new': 3, 'changed': 0, 'removed': 0, 'kept': 6} and result.processed == 3
    paths, emb = featzoo.read_embeddings(out)
    assert paths == sorted(set(before) | {'a.png', 'q.png', 'z.png'})
    for path, row in zip(paths, emb):
        if path in before:
            assert torch.equal(row, before[path]), path


def test_an_empty_file_is_skipped_as_empty(tmp_path):
    """A 0-byte file (a failed copy or download) is skipped with a reason that says it is empty."""
    path = tmp_path / 'empty.jpg'
    path.write_bytes(b'')
    with pytest.raises(ValueError, match=r"empty.jpg' is an empty file \(0 bytes\), not an image"):
        decode_image(str(path))
