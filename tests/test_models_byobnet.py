"""byobnet (RegNetZ, RepVGG, MobileOne, GENet, ResNe(X)t-ts, ...): what is specific to this family.

tests/test_models.py runs every variant against timm at output stride 32 and the representative dilated. Here one
variant per block configuration runs at output strides 32, 16 and 8 on a depth-reduced instance where the row allows
it; MobileOne, which timm strides down without dilating its convolutions, is held at 16 and 8 to a timm model whose
convolutions were dilated by hand to featzoo's scheme (same weights, equal outputs).
"""
from __future__ import annotations

import copy

import pytest
import torch

import featzoo
from featzoo.models.byobnet import SPEC, ByobNet
from helpers import assert_equal, build_timm_reference, check_feature_shapes, save_state, timm_parity


def _depth(name: str) -> int:
    """Blocks per stage of the depth-reduced instance: RepVGG needs two for a block with an identity branch (and,
    in the g4 rows, a grouped one)."""
    return 2 if SPEC.row(name)['block'] == 'rep' else 1


def _shallow(name: str) -> dict:
    """The row with one or two blocks (one MobileOne unit) per stage: the same code on a smaller model."""
    row = SPEC.row(name)
    shallow = dict(depths=(_depth(name),) * len(row['depths']))
    if name in HALF_WIDTH:
        shallow['channels'] = tuple(c // 2 for c in row['channels'])
    return shallow


# one variant per configuration: block types, stems, attention, norms, shortcuts, grouping
CONFIGURATIONS = ('test_byobnet', 'gernet_s', 'repvgg_a0', 'repvgg_b1g4', 'repvgg_d2se', 'mobileone_s1',
                  'mobileone_s0', 'mobileone_s4', 'resnet51q', 'resnet61q', 'resnext26ts', 'gcresnext26ts',
                  'seresnext26ts', 'eca_resnext26ts', 'resnet32ts', 'resnet33ts', 'gcresnet33ts', 'seresnet33ts',
                  'eca_resnet33ts', 'gcresnet50t', 'gcresnext50ts', 'regnetz_b16', 'regnetz_d8', 'regnetz_b16_evos',
                  'regnetz_d8_evos', 'resnet50_clip', 'resnet50_clip_gap', 'resnet50_mlp', 'bat_resnext26ts')
# run at half width as well: bilinear attention needs 256-pixel inputs
HALF_WIDTH = ('bat_resnext26ts',)
# built at full depth: a MobileOne stage's squeeze-excite depends on its depth
FULL_DEPTH = ('mobileone_s0', 'mobileone_s1', 'mobileone_s4')
NOT_DILATED_BY_TIMM = ('mobileone_s0', 'mobileone_s1', 'mobileone_s4')


def test_configurations_cover_the_family():
    covered = {SPEC.configuration(n) for n in CONFIGURATIONS}
    assert [n for n in SPEC.variants if SPEC.configuration(n) not in covered] == []


def _timm_kwargs(name: str) -> dict:
    if name in FULL_DEPTH:
        return {}
    from dataclasses import replace
    from timm.models.byobnet import model_cfgs
    cfg = model_cfgs[name]
    half = 2 if name in HALF_WIDTH else 1
    blocks = tuple(replace(stage, d=_depth(name), c=stage.c // half) for stage in cfg.blocks)  # one cfg per stage
    return dict(blocks=blocks)


# dilated by default: every block type, stem, shortcut and the EvoNorm path; the other configurations with -m slow
DILATED_DEFAULT = ('test_byobnet', 'gernet_s', 'repvgg_b1g4', 'regnetz_d8_evos', 'resnet61q', 'resnext26ts',
                   'resnet50_clip')


def _parity_rows() -> list:
    return [pytest.param(name, stride, id=f'{name}-os{stride}',
                         marks=() if stride == 32 or name in DILATED_DEFAULT else pytest.mark.slow)
            for name in CONFIGURATIONS for stride in (32, 16, 8)]


@pytest.mark.parametrize('name,output_stride', _parity_rows())
def test_parity_per_configuration(name, output_stride):
    if output_stride != 32 and name in NOT_DILATED_BY_TIMM:
        pytest.skip('timm does not dilate MobileOne: test_mobileone_dilates_where_timm_only_strides')
    fz = {} if name in FULL_DEPTH else _shallow(name)
    timm_kwargs = _timm_kwargs(name)
    if SPEC.row(name).get('head_type') == 'attn_abs':
        # featzoo sizes the attention head's position table for the natural grid at every output stride (the
        # weights load unchanged); timm sizes it for the dilated grid, unless its img_size keeps that grid 7x7
        timm_kwargs['img_size'] = 7 * output_stride
    side = SPEC.smallest_input_side(name)
    model = timm_parity(name, input_size=(1, 3, side, side),
                        output_stride=None if output_stride == 32 else output_stride,
                        timm_kwargs=timm_kwargs, featzoo_kwargs=fz)
    assert model.feature_info[-1]['reduction'] == output_stride


def _dilate_like(ref: torch.nn.Module, model: torch.nn.Module) -> int:
    """Give every convolution of ``ref`` the dilation and padding of ``model``'s convolution of the same name."""
    convs = dict(model.named_modules())
    changed = 0
    for name, module in ref.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.dilation != convs[name].dilation:
            module.dilation, module.padding = convs[name].dilation, convs[name].padding
            changed += 1
    return changed


def _equals_reference(name: str, output_stride: int, ref: torch.nn.Module, **kwargs) -> None:
    """featzoo's ``output_stride`` build of ``name`` on ``ref``'s weights: forward_features, logits and every
    features_only level equal ``ref``'s (the levels taken from ``ref``'s modules of the same names)."""
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, output_stride=output_stride, checkpoint_path=path, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x), f'{name} os{output_stride}')
        assert_equal(model(x), ref(x), f'{name} os{output_stride} logits')
    backbone = featzoo.create_model(name, features_only=True, output_stride=output_stride, checkpoint_path=path,
                                    **kwargs).eval()
    feats = check_feature_shapes(backbone, x)
    assert feats[-1].shape[-1] == 64 // output_stride
    captured = {}
    hooks = [ref.get_submodule(m).register_forward_hook(lambda mod, a, out, m=m: captured.__setitem__(m, out))
             for m in backbone.feature_info.module_name()]
    with torch.no_grad():
        ref(x)
    for hook in hooks:
        hook.remove()
    for i, (feat, module) in enumerate(zip(feats, backbone.feature_info.module_name())):
        assert_equal(feat, captured[module], f'{name} os{output_stride} level {i}')


def _mobileone_rows() -> list:
    return [pytest.param(name, marks=() if name in ('mobileone_s0', 'mobileone_s4') else pytest.mark.slow)
            for name in SPEC.variants if name.startswith('mobileone')]


@pytest.mark.parametrize('output_stride', (16, 8))
@pytest.mark.parametrize('name', _mobileone_rows())
def test_mobileone_dilates_where_timm_only_strides(name, output_stride):
    ref = build_timm_reference(name, output_stride=output_stride)
    with torch.device('meta'):
        model = featzoo.create_model(name, output_stride=output_stride)
    assert _dilate_like(ref, model) > 0  # timm's convolutions were not dilated
    _equals_reference(name, output_stride, ref)


@pytest.mark.parametrize('output_stride', (16, 8))
@pytest.mark.parametrize('name', ['gernet_m', pytest.param('gernet_l', marks=pytest.mark.slow)])
def test_stride_one_stage_after_dilation_keeps_its_identity(name, output_stride):
    """GENet's last stage has stride 1. Once the stage before it dilates, timm gives that stage's first block a
    projection shortcut (its first convolution keeps the smaller dilation), parameters that the published weights do
    not hold; featzoo keeps the identity and otherwise computes what timm's dilated model computes."""
    ref = build_timm_reference(name, output_stride=output_stride, **_timm_kwargs(name))
    with torch.device('meta'):
        model = featzoo.create_model(name, output_stride=output_stride, **_shallow(name))
    projected = [n for n, m in ref.named_modules() if n.endswith('shortcut') and not isinstance(m, torch.nn.Identity)
                 and isinstance(model.get_submodule(n), torch.nn.Identity)]
    assert projected == [f'stages.{len(model.stages) - 1}.0.shortcut'], projected
    ref.set_submodule(projected[0], torch.nn.Identity())
    _equals_reference(name, output_stride, ref, **_shallow(name))


def test_training_time_branches_are_all_used():
    """RepVGG and MobileOne blocks hold (and sum) every training-time branch timm publishes."""
    model = featzoo.create_model('mobileone_s0', **_shallow('mobileone_s0'))
    block = model.stages[1][0]
    assert len(block.conv_kxk) == 4 and block.conv_scale is not None
    assert model.stages[1][1].conv_scale is None  # a 1x1 pointwise block has no 1x1 scale branch
    rep = featzoo.create_model('repvgg_a0').stages[0][1]
    assert rep.identity is not None and rep.conv_1x1 is not None


def test_stem_levels_and_pruning_keep_timms_taps():
    """A tiered stem without pool reports its stride-2 level at conv2; pruning to it keeps the stem up to there."""
    model = featzoo.create_model('resnet33ts', **_shallow('resnet33ts')).eval()
    assert [f['module'] for f in model.feature_info] == ['stem.conv2', 'stages.0', 'stages.1', 'stages.2',
                                                         'final_conv']
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        level = model.forward_intermediates(x, indices=(0,), intermediates_only=True)[0]
        pruned = copy.deepcopy(model).eval()
        pruned.prune_intermediate_layers((0,))
        assert type(pruned.stem.conv3).__name__ == 'Identity'
        assert_equal(pruned.forward_intermediates(x, indices=(0,), intermediates_only=True)[0], level)


def test_bad_arguments_name_the_valid_values():
    with pytest.raises(ValueError, match='output_stride'):
        featzoo.create_model('regnetz_b16', output_stride=4)
    row = dict(block='bottle', depths=(1, 1, 1, 1), channels=(32, 64, 96, 128))
    for arg, value in (('block', 'fancy'), ('stem_type', 'wide'), ('downsample', 'max'), ('attn_layer', 'cbam'),
                       ('norm', 'layer')):
        with pytest.raises(ValueError, match=repr(value)):
            ByobNet(**dict(row, **{arg: value}))


def test_attention_head_keeps_its_parameters_at_every_output_stride():
    """A CLIP ResNet's position table is sized for the natural grid, so one checkpoint serves every output stride."""
    with torch.device('meta'):
        shapes = [{k: tuple(v.shape) for k, v in featzoo.create_model('resnet50_clip', output_stride=s).state_dict()
                   .items()} for s in (32, 16, 8)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0]['head.pos_embed'] == (7 * 7 + 1, 2048)
