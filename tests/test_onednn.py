"""The packed oneDNN convolutions of optimize_for_inference compute what F.conv2d computes and never show
themselves: same module class and state_dict, F.conv2d wherever autograd, autocast, tracing or an unusual tensor is
involved; and create_model never installs them."""
from __future__ import annotations

import copy
import pickle
from typing import Any, List

import pytest
import torch
from torch import fx, nn

import featzoo
from featzoo.layers.onednn import PackedConvForward, _onednn_conv_works, pack_convolutions
from helpers import assert_equal, randomize_state

pytestmark = pytest.mark.skipif(not _onednn_conv_works(), reason='this torch build has no oneDNN convolution kernels')
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))


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
    assert pack_convolutions(model) == ['dense', 'hooked', 'dilated']
    stand_in = model.dense._conv_forward
    assert pack_convolutions(model) == ['dense', 'hooked', 'dilated'] and model.dense._conv_forward is stand_in
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
    pack_convolutions(model)
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
        pack_convolutions(made_here)
        plain = nn.Conv2d(3, 8, 3)
        plain.load_state_dict(made_here.state_dict())
        made_here.weight.add_(1.0)  # no version counter records this: a packed copy would go stale
        plain.weight.add_(1.0)
        assert_equal(made_here(x.detach()), plain(x.detach()), 'inference-mode parameters', rtol=1e-5)
        assert not _packed(made_here)


def test_create_model_leaves_convolutions_alone_and_optimize_packs_them():
    model = featzoo.create_model('resnet18').eval()
    with torch.inference_mode():
        model(X)
    assert not any(_packed(m) or '_conv_forward' in m.__dict__ for m in model.modules())
    optimized = featzoo.optimize_for_inference(model)
    optimized(X)
    assert any(_packed(m) for m in model.modules()), 'optimize_for_inference did not use the packed weights'


@pytest.mark.parametrize('family', featzoo.list_modules())
def test_create_model_patches_no_method(family):
    """Every family's models are plain modules: no instance attribute stands in for a method of any submodule."""
    name = featzoo.list_models(module=family)[0]
    with torch.device('meta'):
        for model in (featzoo.create_model(name), featzoo.create_model(name, features_only=True)):
            for path, module in model.named_modules():
                patched = [k for k, v in module.__dict__.items() if callable(v) and hasattr(type(module), k)]
                assert not patched, f'{name}: {path or "the model"} has instance-patched {patched}'


def test_tracers_see_a_plain_convolution():
    model = _Convs().eval()
    pack_convolutions(model)
    traced = fx.symbolic_trace(model)
    assert [n.target for n in traced.graph.nodes if n.op == 'call_module'] == [
        'dense', 'depthwise', 'same', 'hooked', 'dilated']
    exported = torch.export.export(model, (X,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == 'call_function'}
    assert not any('mkldnn' in t for t in targets), targets
    with torch.no_grad():
        assert_equal(exported.module()(X), model(X), 'exported', rtol=1e-5)
