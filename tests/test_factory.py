"""create_model: argument validation happens before anything is built, with clear messages."""
from __future__ import annotations

import pytest
import torch

import featzoo


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(num_classes=-1), ValueError, 'num_classes=-1'),
    (dict(num_classes='10'), TypeError, 'num_classes'),
    (dict(in_chans=0), ValueError, 'in_chans=0'),
    (dict(output_stride=4), ValueError, r'output_stride=4 .*\(8, 16, 32\)'),
    (dict(output_stride=12), ValueError, 'supported'),
    (dict(drop_rate=1.5), ValueError, 'drop_rate'),
    (dict(drop_path_rate=-0.1), ValueError, 'drop_path_rate'),
    (dict(features_only=True, feature_cls='pyramid'), ValueError, "unknown feature_cls 'pyramid'"),
    (dict(features_only=True, out_indices=(5,)), ValueError, 'out of range'),
    (dict(features_only=True, out_indices=()), ValueError, 'empty'),
    (dict(features_only=True, out_indices=(1, 1)), ValueError, 'more than once'),
    (dict(features_only=True, output_fmt='NCWH'), ValueError, 'output_fmt'),
    (dict(features_only=True, out_map=['a']), ValueError, 'out_map'),
    (dict(out_indices=(1, 2)), ValueError, 'features_only=True'),
    (dict(feature_cls='dict'), ValueError, 'features_only=True'),
    (dict(global_pool=3), TypeError, 'global_pool'),
    (dict(global_pool='median'), ValueError, 'median'),
    (dict(pretrained='yes'), TypeError, 'pretrained'),
    (dict(pretrained_cfg_overlay=['file']), TypeError, 'pretrained_cfg_overlay'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        featzoo.create_model('resnet18', **kwargs)


def test_wrapper_the_family_cannot_serve():
    with pytest.raises(ValueError, match=r"cannot serve 'xception41'; it supports \('hook', 'fx'\)"):
        featzoo.create_model('xception41', features_only=True, feature_cls='list')


def test_bad_model_name_types():
    with pytest.raises(TypeError, match='str'):
        featzoo.create_model(50)
    with pytest.raises(featzoo.UnknownModelError):
        featzoo.create_model('')


def test_unknown_constructor_kwarg_is_rejected():
    with pytest.raises(TypeError, match='colour'):
        featzoo.create_model('resnet18', colour='blue')


def test_defaults_follow_pretrained_cfg():
    m = featzoo.create_model('resnet18')
    assert m.num_classes == 1000
    assert m.pretrained_cfg['hf_hub_id'].startswith('timm/resnet18.')
    assert m.pretrained_cfg['first_conv'] == 'conv1'


def test_drop_rate_is_used_in_training_only():
    m = featzoo.create_model('resnet18', drop_rate=0.5, drop_path_rate=0.1)
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(x), m(x))


# ---- the staged pipeline: everything is checked against what will be built, before anything is built -------------

def test_saved_structural_model_args_decide_the_feature_levels(tmp_path):
    """A config.json whose model_args change the structure (depth=2) gives a backbone of that structure: the
    out_indices default and checks follow the 2-block network, not the 12-block row of the index."""
    model = featzoo.create_model('vit_tiny_patch16_224', depth=2, img_size=32)
    featzoo.save_pretrained(model, str(tmp_path))
    backbone = featzoo.create_model(f'local-dir:{tmp_path}', features_only=True)
    assert len(backbone.feature_info) == 2
    weighted = featzoo.create_model(f'local-dir:{tmp_path}', features_only=True, pretrained=True,
                                    out_indices=(0, 1))
    out = weighted(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape) for t in out] == [(1, 192, 2, 2)] * 2
    with pytest.raises(ValueError, match='out_indices entry 5 is out of range for a model with 2 feature levels'):
        featzoo.create_model(f'local-dir:{tmp_path}', features_only=True, out_indices=(5,))


def test_plan_checks_everything_before_building(monkeypatch):
    from featzoo import factory
    from featzoo.family import FamilySpec
    built = []
    original = FamilySpec.build
    # each build records where its tensors would live: the meta device allocates nothing
    monkeypatch.setattr(FamilySpec, 'build',
                        lambda self, *a, **k: built.append(a + (torch.empty(()).device.type,)) or original(self, *a, **k))
    with pytest.raises(ValueError, match='out_indices entry 7'):
        featzoo.create_model('resnet18', features_only=True, out_indices=(7,))
    with pytest.raises(ValueError, match="\\['norm'\\] do not apply to feature_cls='hook'"):
        featzoo.create_model('resnet18', features_only=True, feature_cls='hook', norm=True)
    assert built == []
    plan = factory.plan_model('resnet50', features_only=True, out_indices=(-1,), output_stride=8)
    assert plan.features.out_indices == (4,) and plan.features.feature_cls == 'list' and built == []
    # structural arguments are checked against a build on the meta device, which allocates nothing
    with pytest.raises(ValueError, match='out_indices entry 3 is out of range for a model with 3 feature levels'):
        featzoo.create_model('vit_tiny_patch16_224', depth=3, features_only=True, out_indices=(3,))
    assert built == [('vit_tiny_patch16_224', 'meta')]


def test_full_models_answer_default_cfg_as_timm():
    model = featzoo.create_model('resnet18')
    assert model.default_cfg is model.pretrained_cfg and model.default_cfg['architecture'] == 'resnet18'
    assert featzoo.create_model('resnet18', features_only=True).default_cfg['architecture'] == 'resnet18'


def test_untrained_tags_behave_as_in_timm():
    import timm
    arch = 'mobilenetv2_035'  # timm lists 'mobilenetv2_035.untrained' (no published weights)
    assert timm.is_model(f'{arch}.untrained') and featzoo.is_model(f'{arch}.untrained')
    assert not featzoo.is_model('resnet50.untrained')  # timm lists no such tag; featzoo is stricter than is_model
    assert featzoo.list_models(arch, include_tags=True) == timm.list_models(arch, include_tags=True)
    assert featzoo.list_models(arch, pretrained=True) == timm.list_models(arch, pretrained=True) == []
    untrained = [n for n in featzoo.list_models(include_tags=True) if n.endswith('.untrained')]
    assert untrained, 'the index lists no untrained tags: regenerate it with tools/gen_index.py'
    for name in untrained:
        assert name in timm.list_models(name.split('.')[0], include_tags=True), name
    model = featzoo.create_model(f'{arch}.untrained', num_classes=3)
    assert model.num_classes == 3 and model.pretrained_cfg['tag'] == 'untrained'
    with pytest.raises(ValueError, match=f"tag 'untrained' of '{arch}' has no published pretrained weights"):
        featzoo.create_model(f'{arch}.untrained', pretrained=True)


def test_checkpoint_without_classifier_needs_an_explicit_head(tmp_path, caplog):
    from safetensors.torch import save_file
    state = {k: v for k, v in featzoo.create_model('resnet10t').state_dict().items() if not k.startswith('fc.')}
    path = tmp_path / 'headless.safetensors'
    save_file(state, str(path))
    with pytest.raises(RuntimeError, match=r"lacks 'fc.bias', 'fc.weight'.*num_classes=0.*features_only=True"):
        featzoo.create_model('resnet10t', checkpoint_path=path)  # the default 1000 classes: not asked for
    with caplog.at_level('INFO', logger='featzoo'):
        fresh = featzoo.create_model('resnet10t', checkpoint_path=path, num_classes=1000)  # asked for, any value
    assert fresh.fc.out_features == 1000 and 'fc' in caplog.text
    assert featzoo.create_model('resnet10t', checkpoint_path=path, num_classes=0).num_classes == 0
    assert len(featzoo.create_model('resnet10t', checkpoint_path=path, features_only=True).feature_info) == 5


def test_deprecated_timm_names_map_to_their_current_tag_with_a_warning():
    import json
    import pathlib
    from timm.models._registry import _deprecated_models
    table = json.loads((pathlib.Path(featzoo.__file__).parent / 'index' / '_deprecated.json').read_text())
    assert table, 'no deprecated names: regenerate with python tools/gen_index.py'
    registered = set(featzoo.list_models())
    # every timm alias whose target featzoo can serve is in the table, mapped as timm maps it
    assert table == {old: new for old, new in _deprecated_models.items() if featzoo.is_model(new)}
    for old, new in table.items():
        assert featzoo.is_model(old) and old not in registered, old
        assert featzoo.model_capabilities(old).name == new.split('.')[0]
    with pytest.warns(FutureWarning, match="'convnext_tiny_in22ft1k' is a deprecated model name.*convnext_tiny"):
        model = featzoo.create_model('convnext_tiny_in22ft1k', num_classes=0)
    assert (model.pretrained_cfg['architecture'], model.pretrained_cfg['tag']) == ('convnext_tiny', 'fb_in22k_ft_in1k')
