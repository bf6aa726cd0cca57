"""Fine-tuning controls on every family: freezing, frozen/eval batch norm, checkpointing, param groups, autocast."""
from __future__ import annotations


import pytest
import torch
from torch import nn

import featzoo
from featzoo.layers import FrozenBatchNorm2d
from helpers import assert_equal, behaviour_side, representatives, slow_matrix, slow_overrides

ALL = slow_matrix()  # one architecture per configuration; FEATZOO_SLOW_EVERY_VARIANT=1 for all
REPS = representatives()
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _images(name: str) -> torch.Tensor:
    """X, or a batch of the smallest size ``name`` takes where that is above 64 px (bilinear attention: 256)."""
    side = behaviour_side(name)
    return X if side == 64 else torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))


def _outputs(out):
    if isinstance(out, dict):
        return list(out.values())
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def _loss(out):
    return sum(o.float().pow(2).mean() for o in _outputs(out))


@pytest.mark.parametrize('features_only', [False, True])
@pytest.mark.parametrize('name', REPS)
def test_freeze_levels(name, features_only, overrides=None):
    torch.manual_seed(0)
    model = featzoo.create_model(name, features_only=features_only, freeze=1, freeze_bn='frozen', **(overrides or {}))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    frozen_buffers = {n: b.clone() for n, b in model.named_buffers()
                      if any(n.startswith(m + '.') for m, mod in model.named_modules() if isinstance(mod, FrozenBatchNorm2d))}
    assert frozen, 'nothing was frozen'
    assert any(p.requires_grad for p in model.parameters()), 'everything was frozen'
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    images = _images(name)
    _loss(model(images)).backward()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
    opt.step()
    model(images)
    current = dict(model.named_parameters())
    for n, value in frozen.items():
        assert torch.equal(current[n], value), n
    buffers = dict(model.named_buffers())
    for n, value in frozen_buffers.items():
        assert torch.equal(buffers[n], value), n


@pytest.mark.parametrize('name', REPS)
def test_freeze_grows_with_levels(name):
    """Each further level freezes at least what the one before froze, and the first freezes something; a level the
    trunk cannot stop at (HRNet's branch levels) is refused by name rather than freezing nothing."""
    with torch.device('meta'):
        model = featzoo.create_model(name)
    count = len(model.feature_info)
    previous = set()
    for levels in range(1, count + 1):
        with torch.device('meta'):
            model = featzoo.create_model(name)
        try:
            featzoo.freeze(model, levels=levels, bn='train')
        except ValueError as error:
            assert levels > 1 and f'valid: 0 to {levels - 1}' in str(error), error
            break
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen and previous <= frozen, f'levels={levels} froze {len(frozen)} parameters, not a superset'
        previous = frozen


def test_freeze_keeps_state_dict_keys():
    model = featzoo.create_model('resnet18')
    keys = list(model.state_dict())
    featzoo.freeze(model, levels=3)
    assert list(model.state_dict()) == keys or sorted(model.state_dict()) == sorted(keys)
    featzoo.unfreeze(model)
    assert sorted(model.state_dict()) == sorted(keys)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def test_bn_eval_keeps_statistics_in_train_mode():
    model = featzoo.create_model('resnet18', features_only=True)
    featzoo.freeze(model, levels=1, bn='eval')
    before = model.layer3[0].bn1.running_mean.clone()
    model.train()
    model(X)
    assert torch.equal(model.layer3[0].bn1.running_mean, before)
    featzoo.unfreeze(model)
    model.train()
    model(X)
    assert not torch.equal(model.layer3[0].bn1.running_mean, before)


def test_freeze_errors():
    model = featzoo.create_model('resnet18')
    with pytest.raises(ValueError, match='5 feature levels'):
        featzoo.freeze(model, levels=6)
    with pytest.raises(ValueError, match='bn mode'):
        featzoo.freeze(model, levels=1, bn='sometimes')
    with pytest.raises(KeyError, match='layer9'):
        featzoo.freeze(model, levels=['layer9'])
    with pytest.raises(ValueError, match='freeze_bn'):
        featzoo.create_model('resnet18', freeze=1, freeze_bn='x')


def test_freeze_by_name():
    model = featzoo.freeze(featzoo.create_model('resnet18'), levels=['conv1', 'layer2'], bn='train')
    assert not model.conv1.weight.requires_grad and not model.layer2[1].conv2.weight.requires_grad
    assert model.layer1[0].conv1.weight.requires_grad
    assert isinstance(model.layer2[0].bn1, nn.BatchNorm2d)


def backward_with_recompute_count(model: nn.Module, x: torch.Tensor) -> int:
    """Run forward and backward of ``_loss``; return how many leaf-module forwards ran during the backward pass.

    Gradient checkpointing is exactly that: activations are dropped in the forward and recomputed in the backward,
    so the count is 0 without it and positive with it (equal gradients alone cannot tell the two apart).
    """
    phase = {'backward': False, 'count': 0}

    def count(module, args, output):
        if phase['backward']:
            phase['count'] += 1

    handles = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    try:
        loss = _loss(model(x))
        phase['backward'] = True
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return phase['count']


@pytest.mark.parametrize('features_only', [False, True])
@pytest.mark.parametrize('name', REPS)
def test_grad_checkpointing_gradients_equal(name, features_only, overrides=None):
    torch.manual_seed(0)
    model = featzoo.create_model(name, features_only=features_only, drop_path_rate=0.0, **(overrides or {})).train()
    # eval-mode batch norm keeps both runs deterministic; dropout an architecture builds in whatever the rates (the
    # 0.125 of RelPosMlp's hidden layer) draws the same masks from the same seed: checkpointing replays the RNG state
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    images = _images(name)
    torch.manual_seed(1)
    assert backward_with_recompute_count(model, images) == 0
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    recomputed = backward_with_recompute_count(model, images)
    assert recomputed > 0, f'{name}: set_grad_checkpointing(True) recomputed nothing in the backward pass'
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    for n in ref:
        assert_equal(got[n], ref[n], n)


@pytest.mark.parametrize('name', REPS)
def test_param_groups_cover_every_parameter_once(name):
    for features_only in (False, True):
        model = featzoo.create_model(name, features_only=features_only)
        for layer_decay in (None, 0.75):
            groups = featzoo.param_groups(model, weight_decay=0.05, layer_decay=layer_decay)
            seen = [id(p) for g in groups for p in g['params']]
            assert len(seen) == len(set(seen)) == sum(1 for _ in model.parameters())
            for g in groups:
                for n, p in zip(g['names'], g['params']):
                    if p.ndim <= 1:
                        assert g['weight_decay'] == 0.0, n
            if layer_decay:
                scales = [g['lr_scale'] for g in groups]
                assert max(scales) == 1.0 and min(scales) < 1.0
            torch.optim.AdamW(groups, lr=1e-3)


def test_layer_decay_runs_from_stem_to_head():
    ids = featzoo.finetune.layer_ids(featzoo.create_model('resnet18'))
    assert ids['conv1.weight'] == 0
    assert ids['layer1.0.conv1.weight'] < ids['layer4.1.conv2.weight'] < ids['fc.weight']


@pytest.mark.parametrize('features_only', [False, True])
@pytest.mark.parametrize('name', REPS)
def test_autocast_bf16_and_channels_last(name, features_only):
    torch.manual_seed(0)
    model = featzoo.create_model(name, features_only=features_only).eval()
    with torch.no_grad():
        ref = _outputs(model(X))
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = _outputs(model(X.to(memory_format=torch.channels_last)))
    for a, b in zip(got, ref):
        cos = torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0)
        assert cos >= 0.99, f'{name}: cosine {cos:.4f}'


@pytest.mark.slow
@pytest.mark.parametrize('name', ALL)
def test_freeze_and_checkpoint_every_model(name):
    overrides = slow_overrides(name)
    test_freeze_levels(name, True, overrides)
    test_grad_checkpointing_gradients_equal(name, False, overrides)
