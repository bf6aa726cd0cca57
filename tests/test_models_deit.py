"""DeiT (plain and distilled) and DeiT III: parity with timm, the distillation head, features.

The family reuses featzoo's VisionTransformer (its general behaviour is tested in test_models_vision_transformer.py);
here: one architecture per configuration at depth 2 in the default suite, every architecture in the slow suite.
"""
from __future__ import annotations

import pytest
import torch

import featzoo
from helpers import assert_equal, build_timm_reference, check_feature_shapes, save_state, timm_parity

timm = pytest.importorskip('timm')

FAMILY = 'deit'
NAMES = featzoo.list_models(module=FAMILY)
SPEC = featzoo.registry.family_spec(FAMILY)
CONFIGS = sorted({SPEC.configuration(n): n for n in sorted(
    NAMES, key=lambda n: -featzoo.registry.get_arch_entry(n)['num_params'])}.values())


def _input(size, seed: int = 0) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed))


def _side(name: str, cells: int) -> int:
    return cells * featzoo.model_capabilities(name).output_strides[0]


def test_family_registered():
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    # the distilled, plain and DeiT III rows are three configurations
    assert {SPEC.row(n).get('distilled', False) for n in CONFIGS} == {True, False}
    assert any(SPEC.row(n).get('no_embed_class') for n in CONFIGS)
    assert featzoo.list_models('deit_*', module='vision_transformer') == []


@pytest.mark.parametrize('name', CONFIGS)
def test_timm_parity_and_features(name):
    kw = dict(depth=2)
    side = _side(name, 5)
    timm_parity(name, input_size=(1, 3, side, _side(name, 4)), timm_kwargs=dict(kw, dynamic_img_size=True),
                featzoo_kwargs=kw, check_features=False)
    ref = build_timm_reference(name, depth=2, dynamic_img_size=True)
    backbone = featzoo.create_model(name, depth=2, features_only=True, out_indices=(0, 1),
                                    checkpoint_path=save_state(ref.state_dict())).eval()
    x = _input((1, 3, _side(name, 3), side))
    feats = check_feature_shapes(backbone, x)
    with torch.no_grad():
        refs = ref.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for i, (a, b) in enumerate(zip(feats, refs)):
        assert_equal(a, b, f'{name} feature level {i}')


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_every_architecture(name):
    # full depth unless the float32 weights exceed 1.5 GB (deit3_huge: checked at depth 2, full width)
    depth = {} if featzoo.registry.get_arch_entry(name)['num_params'] * 4 <= 1.5 * 2 ** 30 else dict(depth=2)
    timm_parity(name, input_size=(1, 3, _side(name, 5), _side(name, 7)), timm_kwargs=dict(depth, dynamic_img_size=True),
                featzoo_kwargs=depth)


def test_distilled_training_returns_both_heads():
    name = 'deit_tiny_distilled_patch16_224'
    ref = build_timm_reference(name, depth=1, dynamic_img_size=True)
    with torch.device('meta'):
        model = featzoo.create_model(name, depth=1)
    model.load_state_dict(ref.state_dict(), assign=True)
    assert model.num_prefix_tokens == ref.num_prefix_tokens == 2
    assert [type(h) for h in model.get_classifier()] == [torch.nn.Linear] * 2
    model.set_distilled_training(True)
    ref.set_distilled_training(True)
    x = _input((1, 3, 32, 48))
    with torch.no_grad():
        assert_equal(model.eval()(x), ref.eval()(x), 'mean of the two heads in eval mode')
        ours, theirs = model.train()(x), ref.train()(x)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        assert_equal(a, b, 'class and distillation logits in training')
    with pytest.raises(ValueError, match="'token'"):
        model.reset_classifier(5, 'avg')


def test_deit3_position_embedding_skips_class_token():
    with torch.device('meta'):
        model = featzoo.create_model('deit3_small_patch16_384', depth=1)
    assert model.no_embed_class and model.pos_embed.shape == (1, 24 * 24, 384)
    assert featzoo.model_capabilities('deit3_small_patch16_384').output_strides == (16,)
