"""The opt-in oneDNN fast path of eager CPU inference computes what F.conv2d computes and never shows itself: same
module class and state_dict, NCHW outputs from every public method, F.conv2d wherever autograd, autocast, tracing or
an unusual tensor is involved."""
from __future__ import annotations

import copy
import pickle
from typing import Any, List

import pytest
import torch
from torch import fx, nn

import featzoo
from featzoo.layers import onednn
from featzoo.layers.onednn import PackedConvForward, _onednn_conv_works, contiguous_outputs, prepack_convolutions
from helpers import assert_equal, randomize_state

pytestmark = pytest.mark.skipif(not _onednn_conv_works(), reason='this torch build has no oneDNN convolution kernels')
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))


@pytest.fixture(autouse=True)
def fast_path_on():
    before = onednn.is_enabled()
    onednn.set_enabled(True)
    yield
    onednn.set_enabled(before)


class _Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Conv2d(3, 8, 3, stride=2, padding=1)                   # packed
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)              # grouped: plain
        self.same = nn.Conv2d(8, 8, 3, padding='same', bias=False)            # string padding: plain
        self.hooked = nn.Conv2d(8, 8, 1)                                      # packed; its hook still sees it run
        self.dilated = nn.Conv2d(8, 4, 3, padding=2, dilation=2, bias=False)  # packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dilated(self.hooked(self.same(self.depthwise(self.dense(x)))))


def _record(seen: List[Any], *args: Any) -> None:
    seen.append(args[-1].shape)


def _packed(module: nn.Module) -> bool:
    return isinstance(module.__dict__.get('_conv_forward'), PackedConvForward) and module._conv_forward.packed is not None


def test_prepacked_convolutions_compute_what_conv2d_does():
    model = _Convs().eval()
    randomize_state(model)
    inputs = [torch.randn(2, 3, 20, 20), torch.randn(3, 3, 33, 17),  # a second shape after packing for the first
              torch.randn(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)]
    with torch.no_grad():
        references = [model(x) for x in inputs]
    keys = set(model.state_dict())
    assert prepack_convolutions(model) == ['dense', 'hooked', 'dilated']
    stand_in = model.dense._conv_forward
    assert prepack_convolutions(model) == ['dense', 'hooked', 'dilated'] and model.dense._conv_forward is stand_in
    assert all(type(m) is nn.Conv2d for m in model.children()) and set(model.state_dict()) == keys
    seen: List[Any] = []
    model.hooked.register_forward_hook(lambda *args: _record(seen, *args))
    for x, reference in zip(inputs, references):
        with torch.inference_mode():
            assert_equal(model(x), reference, f'packed at {tuple(x.shape)}', rtol=1e-5)
    assert len(seen) == 3 and _packed(model.dense) and _packed(model.dilated) and not _packed(model.depthwise)
    # the parameters change in place (load_state_dict): the packed copy follows
    fresh = _Convs().eval()
    randomize_state(fresh, seed=9)
    with torch.no_grad():
        expected = fresh(inputs[0])
    model.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        assert_equal(model(inputs[0]), expected, 'after load_state_dict', rtol=1e-5)
    # replaced weights (fold_conv_bn and .to() replace them) are packed again; a successor at the freed tensor's
    # address with the same version once served a stale packing in test_extract's checkpoint test, which guards that
    shape, sources = model.dense.weight.shape, [torch.randn(model.dense.weight.shape) for _ in range(4)]
    model.dense.weight = nn.Parameter(torch.empty(shape).copy_(sources[0]), requires_grad=False)
    for source in sources[1:]:
        with torch.inference_mode():
            model.dense(inputs[0])  # packed for the current weight
        del model.dense.weight
        replacement = torch.empty(shape)
        replacement.copy_(source)
        model.dense.weight = nn.Parameter(replacement, requires_grad=False)
        with torch.inference_mode():
            got = model.dense(inputs[0])
        assert_equal(got, torch.nn.functional.conv2d(inputs[0], replacement, model.dense.bias, 2, 1), 'replaced',
                     rtol=1e-5)
    model.load_state_dict(fresh.state_dict())
    model.hooked._forward_hooks.clear()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.dense._conv_forward.conv is clone.dense and clone.dense._conv_forward.packed is None
        with torch.inference_mode():
            assert_equal(clone(inputs[0]), expected, 'copied', rtol=1e-5)


def test_autograd_autocast_dtypes_and_inference_parameters_take_the_plain_path():
    model = _Convs().eval()
    prepack_convolutions(model)
    x = torch.randn(2, 3, 20, 20, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and model.dense.weight.grad is not None and not _packed(model.dense)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert model.dense(x.detach()).dtype == torch.bfloat16  # autocast chose the dtype: F.conv2d ran
    assert not _packed(model.dense)
    with torch.no_grad():
        double = copy.deepcopy(model).double()
        assert_equal(double(x.double()).float(), model(x), 'float64', rtol=1e-5)
    with torch.inference_mode():
        made_here = nn.Conv2d(3, 8, 3)
        prepack_convolutions(made_here)
        plain = nn.Conv2d(3, 8, 3)
        plain.load_state_dict(made_here.state_dict())
        made_here.weight.add_(1.0)  # no version counter records this: a packed copy would go stale
        plain.weight.add_(1.0)
        assert_equal(made_here(x.detach()), plain(x.detach()), 'inference-mode parameters', rtol=1e-5)
        assert not _packed(made_here)


def test_switch_turns_the_fast_path_off():
    model = _Convs().eval()
    prepack_convolutions(model)
    onednn.set_enabled(False)
    try:
        with torch.inference_mode():
            out = model(torch.randn(1, 3, 12, 12))
        assert out.is_contiguous() and not _packed(model.dense)
    finally:
        onednn.set_enabled(True)
    with pytest.raises(TypeError, match="enabled must be True or False, got 'no'"):
        onednn.set_enabled('no')


def test_off_by_default_and_always_for_optimize_for_inference():
    import subprocess
    import sys
    code = 'import featzoo.layers.onednn as o; print(o.is_enabled())'
    env = {k: v for k, v in __import__('os').environ.items() if k != 'FEATZOO_ONEDNN'}
    assert subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True).stdout.strip() \
        == 'False'
    onednn.set_enabled(False)
    model = featzoo.create_model('resnet18').eval()
    with torch.inference_mode():
        model(X)
    assert not any(_packed(m) for m in model.modules()), 'the fast path ran while switched off'
    optimized = featzoo.optimize_for_inference(model)
    optimized(X)
    assert any(_packed(m) for m in model.modules()), 'optimize_for_inference did not use the packed weights'


def test_tracers_see_a_plain_convolution():
    model = _Convs().eval()
    prepack_convolutions(model)
    traced = fx.symbolic_trace(model)
    assert [n.target for n in traced.graph.nodes if n.op == 'call_module'] == [
        'dense', 'depthwise', 'same', 'hooked', 'dilated']
    exported = torch.export.export(model, (X,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == 'call_function'}
    assert not any('mkldnn' in t for t in targets), targets
    with torch.no_grad():
        assert_equal(exported.module()(X), model(X), 'exported', rtol=1e-5)


def test_contiguous_outputs_leaves_other_values_alone():
    @contiguous_outputs
    def f(x: torch.Tensor) -> Any:
        return {'map': x.contiguous(memory_format=torch.channels_last), 'n': 3, 'flat': x.flatten(1), 'none': None}
    out = f(torch.ones(1, 4, 2, 2))
    assert out['map'].is_contiguous() and out['n'] == 3 and out['none'] is None and out['flat'].shape == (1, 16)


def _outputs(model: nn.Module) -> List[torch.Tensor]:
    with torch.inference_mode():
        return [t for t in torch.utils._pytree.tree_flatten(model(X))[0] if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize('family', featzoo.list_modules())
def test_every_public_output_stays_nchw_and_equal(family):
    """Where the convolutions hand channels_last maps on, every method a user calls still returns NCHW-contiguous
    maps equal to the plain path's."""
    name = featzoo.list_models(module=family)[0]
    kwargs = dict(img_size=64) if family in ('vision_transformer', 'swin_transformer') else {}
    model = featzoo.create_model(name, **kwargs).eval()
    randomize_state(model)
    candidates = {'forward_features': lambda: model.forward_features(X), 'forward': lambda: model(X)}
    if hasattr(model, 'forward_intermediates'):
        candidates['forward_intermediates'] = lambda: model.forward_intermediates(X)
    for cls in featzoo.model_capabilities(name).feature_cls:
        if cls == 'dict':
            continue  # the list wrapper's code with another output container
        feat = featzoo.create_model(name, features_only=True, feature_cls=cls, **kwargs).eval()
        feat.load_state_dict(model.state_dict(), strict=False)
        candidates[f'features_only {cls}'] = feat
    candidates['create_feature_extractor'] = featzoo.create_feature_extractor(
        model, return_nodes=featzoo.get_graph_node_names(model)[1][-3:-1])
    for what, fn in candidates.items():
        with torch.inference_mode():
            fast = torch.utils._pytree.tree_flatten(fn() if not isinstance(fn, nn.Module) else fn(X))[0]
        onednn.set_enabled(False)
        try:
            with torch.inference_mode():
                plain = torch.utils._pytree.tree_flatten(fn() if not isinstance(fn, nn.Module) else fn(X))[0]
        finally:
            onednn.set_enabled(True)
        if what == 'forward_features':
            packed = [m for m in model.modules() if _packed(m)]
            assert packed or not prepack_convolutions(copy.deepcopy(model)), f'{name}: the fast path never ran'
        for a, b in zip(fast, plain):
            if isinstance(a, torch.Tensor):
                assert a.dim() != 4 or a.is_contiguous(), f'{name} {what}: a {tuple(a.shape)} map is not NCHW'
                assert_equal(a, b, f'{name} {what}', rtol=1e-5)
