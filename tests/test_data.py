"""featzoo.data: data config resolution, transforms (against timm's), and image loading."""
from __future__ import annotations

import io
import itertools
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import featzoo
from featzoo.data import create_transform, load_image, resolve_data_config
from helpers import assert_equal

skimage_data = pytest.importorskip('skimage.data')
PHOTO_DIR = os.path.dirname(skimage_data.__file__)
RGB_PHOTOS = ('chelsea.png', 'coffee.png', 'hubble_deep_field.jpg')  # landscape, portrait, JPEG
L_PHOTOS = ('camera.png', 'coins.png')


def _photo(name: str) -> str:
    return os.path.join(PHOTO_DIR, name)


def _timm_open(path: str, mode: str = 'RGB') -> Image.Image:
    # timm's dataset reader: open and convert.
    with open(path, 'rb') as f:
        return Image.open(f).convert(mode)


EVAL_CASES = [
    dict(input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.875, crop_mode='center'),
    dict(input_size=(3, 160, 192), interpolation='bilinear', crop_pct=0.95, crop_mode='center'),
    dict(input_size=(3, 96, 96), interpolation='nearest', crop_pct=1.0, crop_mode='squash'),
    dict(input_size=(3, 128, 112), interpolation='lanczos', crop_pct=0.9, crop_mode='border'),
    dict(input_size=(3, 100, 100), interpolation='box', crop_pct=None, crop_mode=None),
    dict(input_size=64, interpolation='hamming', crop_pct=0.8, crop_mode='squash'),
]


@pytest.mark.parametrize('photo', RGB_PHOTOS + L_PHOTOS)
def test_eval_transform_matches_timm_on_photos(photo):
    from timm.data import create_transform as timm_transform
    path = _photo(photo)
    ours_img = load_image(path)
    theirs_img = _timm_open(path)
    assert np.array_equal(np.asarray(ours_img), np.asarray(theirs_img))
    for case in EVAL_CASES:
        ours = create_transform(**case, normalize=False)(ours_img).int()
        theirs = timm_transform(**case, normalize=False)(theirs_img).int()
        assert ours.shape == theirs.shape, case
        assert (ours - theirs).abs().max().item() <= 1, case  # within 1/255 before normalization
        assert_equal(create_transform(**case)(ours_img), timm_transform(**case)(theirs_img), str(case))


@pytest.mark.parametrize('photo', L_PHOTOS)
def test_eval_transform_matches_timm_on_single_channel_images(photo):
    from timm.data import create_transform as timm_transform
    path = _photo(photo)
    ours_img, theirs_img = load_image(path, mode='L'), _timm_open(path, 'L')
    case = dict(input_size=(1, 112, 96), interpolation='bicubic', crop_pct=0.9, mean=(0.5,), std=(0.25,))
    ours = create_transform(**case)(ours_img)
    assert ours.shape == (1, 112, 96)
    assert_equal(ours, timm_transform(**case)(theirs_img), 'grayscale')


@pytest.mark.slow
@pytest.mark.parametrize('photo', RGB_PHOTOS + L_PHOTOS)
def test_eval_transform_matches_timm_exhaustively(photo):
    from timm.data import create_transform as timm_transform
    img = load_image(_photo(photo))
    sizes = [(3, 224, 224), (3, 160, 192), (3, 192, 160), 97]
    interpolations = ['nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos']
    for size, interp, pct, mode in itertools.product(sizes, interpolations, [None, 0.5, 0.875, 0.95, 1.0, 1.15],
                                                     [None, 'center', 'squash', 'border']):
        case = dict(input_size=size, interpolation=interp, crop_pct=pct, crop_mode=mode, normalize=False)
        ours, theirs = create_transform(**case)(img).int(), timm_transform(**case)(img).int()
        assert ours.shape == theirs.shape and (ours - theirs).abs().max().item() <= 1, case


TRAIN_CASES = [
    dict(),
    dict(interpolation='random', scale=(0.5, 1.0), ratio=(0.5, 2.0), vflip=0.5),
    dict(color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob=0.8, grayscale_prob=0.5, gaussian_blur_prob=0.5),
    dict(re_prob=1.0, re_mode='pixel', re_count=3),
    dict(train_crop_mode='rkrc'),
    dict(train_crop_mode='rkrr', interpolation='bicubic'),
    dict(auto_augment='rand-m9-mstd0.5-inc1'),
    dict(auto_augment='rand-m7-n3-tweights-mmax9'),
    dict(auto_augment='augmix-m5-w4-d2'),
    dict(auto_augment='original-mstd0.5', interpolation='bilinear'),
    dict(auto_augment='3a'),
    dict(no_aug=True, interpolation='random'),
    dict(use_prefetcher=True, hflip=1.0),
]


@pytest.mark.parametrize('case', TRAIN_CASES, ids=lambda c: '-'.join(f'{k}={v}' for k, v in c.items()) or 'default')
def test_training_transform_repeats_timm_under_the_same_seeds(case):
    from timm.data import create_transform as timm_transform
    img = load_image(_photo('chelsea.png')).resize((150, 100))
    ours_tf = create_transform(input_size=(3, 48, 40), is_training=True, **case)
    theirs_tf = timm_transform(input_size=(3, 48, 40), is_training=True, **case)
    for seed in range(4):
        outputs = []
        for tf in (ours_tf, theirs_tf):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            outputs.append(tf(img))
        assert outputs[0].dtype == outputs[1].dtype
        assert_equal(outputs[0].float(), outputs[1].float(), f'{case} seed {seed}')


def test_separate_training_stages():
    primary, secondary, final = create_transform(32, is_training=True, separate=True, auto_augment='rand-m9')
    out = final(secondary(primary(Image.new('RGB', (50, 40), (10, 200, 30)))))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match='separate'):
        create_transform(32, separate=True)


def test_transform_rejects_bad_values():
    for kwargs, pattern in [(dict(interpolation='cubic'), "'cubic'"), (dict(crop_mode='middle'), "'middle'"),
                            (dict(input_size=(3, 224)), None), (dict(input_size=(1, 2, 3, 4)), 'input_size'),
                            (dict(interpolation='random'), 'training'), (dict(crop_pct=-0.5), 'crop_pct'),
                            (dict(is_training=True, train_crop_mode='zoom'), "'zoom'"),
                            (dict(is_training=True, auto_augment='rand-q3'), "'q'"),
                            (dict(is_training=True, auto_augment='v9'), "'v9'"),
                            (dict(is_training=True, re_prob=0.5, re_mode='noise'), "'noise'"),
                            (dict(is_training=True, color_jitter=(0.1, 0.2)), 'color_jitter')]:
        if pattern is None:
            create_transform(**kwargs)  # (H, W) is a valid size
            continue
        with pytest.raises(ValueError, match=pattern):
            create_transform(**kwargs)
    with pytest.raises(TypeError, match='PIL image'):
        create_transform(32)(torch.zeros(3, 40, 40))


# ---------------------------------------------------------------------------------------------------------------
# resolve_data_config

CONFIG_CASES = [
    dict(args={'img_size': 256}),
    dict(args={'input_size': (1, 96, 128), 'mean': (0.5,), 'std': (0.2,)}),
    dict(args={'in_chans': 4, 'mean': (0.5,), 'std': [0.25]}),
    dict(args={'interpolation': 'bilinear', 'crop_pct': 1.0, 'crop_mode': 'squash'}),
    dict(pretrained_cfg={'input_size': (3, 240, 240), 'test_input_size': (3, 288, 288), 'crop_pct': 0.9,
                         'test_crop_pct': 1.0, 'interpolation': 'bilinear', 'mean': (0.5, 0.5, 0.5)}),
    dict(pretrained_cfg={'input_size': (3, 240, 240), 'test_input_size': (3, 288, 288), 'crop_pct': 0.9,
                         'test_crop_pct': 1.0}, use_test_size=True),
    dict(args={'img_size': 200}, pretrained_cfg={'input_size': (3, 240, 240), 'crop_mode': 'border'}),
    dict(args={'crop_pct': 0}, pretrained_cfg={'crop_pct': 0.8}),  # a zero crop_pct falls back, as in timm
]


@pytest.mark.parametrize('case', CONFIG_CASES)
def test_resolve_data_config_matches_timm(case):
    from timm.data import resolve_data_config as timm_resolve
    assert resolve_data_config(**case) == timm_resolve(**case)


@pytest.mark.parametrize('name', ['resnet10t', 'convnext_atto.d2_in1k'])
def test_resolve_from_model_matches_timm(name):
    timm = pytest.importorskip('timm')
    from timm.data import resolve_data_config as timm_resolve
    with torch.device('meta'):
        ours = featzoo.create_model(name)
        theirs = timm.create_model(name)
    for use_test_size in (False, True):
        assert resolve_data_config(model=ours, use_test_size=use_test_size) == \
            timm_resolve(model=theirs, use_test_size=use_test_size)
    backbone = featzoo.create_model(name, features_only=True)
    assert resolve_data_config(model=backbone) == resolve_data_config(model=ours)
    assert featzoo.data.resolve_model_data_config(ours) == resolve_data_config(model=ours)


def test_resolve_data_config_rejects_bad_values():
    with pytest.raises(ValueError, match='at least one'):
        resolve_data_config()
    with pytest.raises(ValueError, match='2 values'):
        resolve_data_config({'mean': (0.1, 0.2)})
    with pytest.raises(ValueError, match="'bicubicc'"):
        resolve_data_config({'interpolation': 'bicubicc'})
    with pytest.raises(ValueError, match="'zoom'"):
        resolve_data_config({'crop_mode': 'zoom'})
    with pytest.raises(ValueError, match='input_size'):
        resolve_data_config({'input_size': (224, 224)})
    with pytest.raises(ValueError, match='img_size'):
        resolve_data_config({'img_size': (224, 224)})
    with pytest.raises(ValueError, match='crop_pct'):
        resolve_data_config({'crop_pct': -1.0})
    with pytest.raises(TypeError, match='args'):
        resolve_data_config(['img_size', 224])


def test_resolve_then_create_end_to_end():
    model = featzoo.create_model('resnet10t')
    cfg = featzoo.data.resolve_data_config(model=model)
    assert set(cfg) == {'input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode'}
    x = featzoo.data.create_transform(**cfg)(load_image(_photo('coffee.png')))
    assert x.shape == cfg['input_size'] and x.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# load_image

def _save(img: Image.Image, path, **kwargs) -> str:
    img.save(path, **kwargs)
    return str(path)


def _pattern(mode: str = 'RGB', size=(6, 4)) -> Image.Image:
    arr = np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3) * 7
    return Image.fromarray(arr, 'RGB').convert(mode)


@pytest.mark.parametrize('orientation,transpose', [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_load_image_applies_exif_orientation(tmp_path, orientation, transpose):
    img = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(img, tmp_path / 'rotated.png', exif=exif)
    loaded = load_image(path)
    assert np.array_equal(np.asarray(loaded), np.asarray(img.transpose(transpose)))


def test_load_image_converts_modes_like_timm(tmp_path):
    rgb = _pattern()
    palette = rgb.convert('P', palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info['transparency'] = 0
    cases = {
        'palette.png': palette,
        'cmyk.jpg': rgb.convert('CMYK'),
        'rgba.png': Image.merge('RGBA', (*rgb.split(), Image.new('L', rgb.size, 17))),
        'bilevel.png': rgb.convert('1'),
        'gray_alpha.png': Image.merge('LA', (rgb.convert('L'), Image.new('L', rgb.size, 3))),
    }
    for name, img in cases.items():
        path = _save(img, tmp_path / name)
        loaded = load_image(path)
        assert loaded.mode == 'RGB', name
        # Alpha is dropped, not composited: the colour channels are kept as they are, as timm's convert('RGB').
        assert np.array_equal(np.asarray(loaded), np.asarray(_timm_open(path))), name
    assert load_image(tmp_path / 'gray_alpha.png', mode=None).mode == 'L'
    assert load_image(tmp_path / 'rgba.png', mode=None).mode == 'RGB'
    assert load_image(tmp_path / 'rgba.png', mode='L').mode == 'L'


def test_load_image_scales_16_bit_instead_of_clipping(tmp_path):
    values = np.array([[0, 128, 257, 1000], [32767, 40000, 65279, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / 'deep.png')
    assert Image.open(path).mode.startswith('I')
    loaded = load_image(path, mode=None)
    assert loaded.mode == 'L'
    assert np.array_equal(np.asarray(loaded), np.rint(values / 257.0).astype(np.uint8))
    assert np.asarray(Image.open(path).convert('L'))[0, 3] == 255  # what plain Pillow would have given (clipped)
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (2, 4, 3) and np.array_equal(rgb[..., 0], np.asarray(loaded))


def test_load_image_inputs_and_errors(tmp_path):
    path = _save(_pattern(), tmp_path / 'ok.png')
    with open(path, 'rb') as f:
        assert load_image(f).size == (6, 4)
    assert load_image(io.BytesIO(open(path, 'rb').read())).size == (6, 4)
    assert load_image(Image.open(path).convert('RGBA')).mode == 'RGB'
    with pytest.raises(FileNotFoundError, match='missing.png'):
        load_image(tmp_path / 'missing.png')
    with pytest.raises(IsADirectoryError):
        load_image(tmp_path)
    (tmp_path / 'notes.txt').write_text('not an image')
    with pytest.raises(ValueError, match='notes.txt'):
        load_image(tmp_path / 'notes.txt')
    truncated = tmp_path / 'cut.jpg'
    truncated.write_bytes(open(_photo('hubble_deep_field.jpg'), 'rb').read()[:2000])
    with pytest.raises(ValueError, match='cut.jpg'):
        load_image(truncated)
    with pytest.raises(ValueError, match="'RGBA'"):
        load_image(path, mode='RGBA')
    with pytest.raises(TypeError, match='path'):
        load_image(42)


def test_data_imports_neither_timm_nor_torchvision():
    code = ('import sys, featzoo, featzoo.data\n'
            'from PIL import Image\n'
            'tf = featzoo.data.create_transform(input_size=(3, 32, 32), is_training=True, auto_augment="rand-m9")\n'
            'tf(Image.new("RGB", (40, 40)))\n'
            'featzoo.data.create_transform(**featzoo.data.resolve_data_config({"img_size": 32}))\n'
            'bad = sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision"))\n'
            'assert not bad, bad\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=root))
    assert result.returncode == 0, result.stderr
