"""FX feature extraction: torchvision's node names and extractor outputs, the seeds' examples, node info by meta
shape propagation, extractors' feature_info, the notrace registry, and feature_cls='fx' on every featzoo model.

torchvision is a test-only oracle here. Its models are built on the meta device and given deterministic weights
(fast to create), so the default suite stays small on two cores; every featzoo model is covered under ``slow``.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
from torch import fx, nn

import featzoo
from featzoo import registry
from featzoo.features import fx as fzfx
from featzoo.features.notrace import (
    get_notrace_functions, get_notrace_modules, is_notrace_function, is_notrace_module, register_notrace_function,
    register_notrace_module,
)
from helpers import (assert_equal, behaviour_side, randomize_state, representatives, slow_matrix, slow_overrides,
                     smallest_input)

torchvision = pytest.importorskip('torchvision')
from torchvision.models import feature_extraction as tvfe  # noqa: E402


# ---- helpers -----------------------------------------------------------------------------------------------------

def _fill_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic weights scaled by fan-in (activations neither vanish nor explode), valid BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if not t.dtype.is_floating_point:
                t.zero_()
            elif name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.ndim > 1:
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(max(1, t[0].numel())))
            elif name.endswith('weight'):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
    return model


def _tv_model(name: str, real: bool = True, **kwargs) -> nn.Module:
    with torch.device('meta'):
        model = getattr(torchvision.models, name)(**kwargs)
    if real:
        model = _fill_(model.to_empty(device='cpu'))
    return model.eval()


_TV_CACHE: Dict[str, nn.Module] = {}
TV_SIZE = {'resnet50': {}, 'mobilenet_v3_large': {}, 'vit_b_16': dict(image_size=64), 'swin_t': {}}


def tv_model(name: str) -> nn.Module:
    """A real torchvision model (64 px inputs), built once per session."""
    if name not in _TV_CACHE:
        _TV_CACHE[name] = _tv_model(name, **TV_SIZE[name])
    return _TV_CACHE[name]


def _image(size=(2, 3, 64, 64), seed: int = 0) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed))


def _real_node_shapes(model: nn.Module, x: torch.Tensor, train: bool = False) -> Dict[str, Optional[tuple]]:
    """Each named node's output shape from a real forward through the same traced graph."""
    tracer = fzfx.NodePathTracer(**fzfx._tracer_kwargs(None))
    with fzfx._training_mode(model, train):
        graph = tracer.trace(model)
        gm = fx.GraphModule(model, graph)
        shapes: Dict[fx.Node, Optional[tuple]] = {}

        class Recorder(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                shapes[n] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
                return out

        with torch.no_grad():
            Recorder(gm).run(x)
    return {tracer.node_to_qualname[n]: s for n, s in shapes.items() if n in tracer.node_to_qualname}


# ---- node names: torchvision parity ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['resnet50', 'mobilenet_v3_large', 'vit_b_16', 'swin_t'])
def test_node_names_equal_torchvision(name):
    model = _tv_model(name, real=False)
    expected = tvfe.get_graph_node_names(model)
    got = featzoo.features.fx.get_graph_node_names(model)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert model.training is False


class _ThreeAdds(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        x = x + 1
        x = x + 2
        x = self.act(x)
        return self.act(x + 3)


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = _ThreeAdds()
        self.b = nn.Sequential(_ThreeAdds(), _ThreeAdds())
        self.conv_1 = nn.Conv2d(3, 3, 1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = self.a(x) * self.scale
        x = self.conv_1(self.b(x))
        x = x.mean(1) + x.mean(1)
        return torch.flatten(x, 1) + 1


def test_node_name_postfixes_are_counted_within_the_parent():
    train_nodes, eval_nodes = fzfx.get_graph_node_names(_Nested())
    assert train_nodes == eval_nodes
    assert train_nodes == tvfe.get_graph_node_names(_Nested())[0]
    assert ['a.add', 'a.add_1', 'a.act', 'a.add_2', 'a.act_1'] == [n for n in train_nodes if n.startswith('a.')]
    assert 'b.0.add_2' in train_nodes and 'b.1.add_2' in train_nodes and 'b.1.add_3' not in train_nodes
    assert {'mean', 'mean_1', 'add', 'scale', 'mul'} <= set(train_nodes)
    names = fzfx.get_graph_node_names(tv_model('resnet50'))[0]
    assert 'layer4.1.add' in names and 'layer4.2.add' in names and 'layer4.2.relu_2' in names


# ---- create_feature_extractor: torchvision parity ----------------------------------------------------------------

RETURN_NODES = {
    'resnet50': {'layer4': 'c5', 'layer1': 'c2', 'layer2.3.relu_2': 'c3', 'layer3': 'c4', 'x': 'image'},
    'mobilenet_v3_large': {'features.16': 'last', 'features.1.add': 'first_add', 'features.6': 'mid', 'flatten': 'f'},
    'vit_b_16': {'encoder.layers.encoder_layer_11': 'last', 'conv_proj': 'patches',
                 'encoder.layers.encoder_layer_3.add_1': 'b3', 'encoder.ln': 'ln'},
    'swin_t': {'features.7': 's4', 'features.1': 's1', 'features.3.1.add_1': 'mid', 'norm': 'norm'},
}


@pytest.mark.parametrize('name', list(RETURN_NODES))
def test_extractor_outputs_equal_torchvision(name):
    model = tv_model(name)
    nodes = RETURN_NODES[name]
    ours = featzoo.features.fx.create_feature_extractor(model, return_nodes=nodes).eval()
    theirs = tvfe.create_feature_extractor(model, return_nodes=dict(nodes)).eval()
    x = _image()
    with torch.no_grad():
        got, expected = ours(x), theirs(x)
    assert list(got) == list(nodes.values())  # the user's order, not graph order
    assert set(got) == set(expected)
    for key in nodes.values():
        assert_equal(got[key], expected[key], f'{name}:{key}')
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert model.training is False


def test_extractor_list_form_and_train_eval_switch():
    model = tv_model('resnet50')
    ext = fzfx.create_feature_extractor(model, ['layer2', 'layer1'])
    assert ext.training is False and model.training is False
    x = _image()
    with torch.no_grad():
        out = ext(x)
        assert list(out) == ['layer2', 'layer1']
        ext.train()
        assert ext.graph is ext.train_graph and ext.layer1._modules['0'].bn1.training
        train_out = ext(x)
        ext.eval()
        assert ext.graph is ext.eval_graph
    assert train_out['layer1'].shape == out['layer1'].shape
    assert not torch.allclose(train_out['layer1'], out['layer1'])  # batch statistics in train mode
    assert not hasattr(ext, 'fc') and not hasattr(ext, 'layer3')
    assert not any(k.startswith(('fc.', 'layer3.', 'layer4.')) for k in ext.state_dict())


class _ModeDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        if self.training:
            x = x * 2
        return self.head(x.mean((2, 3)))


def test_train_and_eval_return_nodes_are_held_separately():
    model = _ModeDependent()
    with pytest.warns(UserWarning, match='subsequence'):
        train_nodes, eval_nodes = fzfx.get_graph_node_names(model)
    assert 'mul' in train_nodes and 'mul' not in eval_nodes
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        fzfx.get_graph_node_names(model, suppress_diff_warning=True)
    ext = fzfx.create_feature_extractor(model, train_return_nodes={'mul': 'feat'},
                                        eval_return_nodes={'conv': 'feat'}, suppress_diff_warning=True)
    x = _image((1, 3, 8, 8))
    with torch.no_grad():
        conv = model.conv(x)
        assert_equal(ext.eval()(x)['feat'], conv)
        assert_equal(ext.train()(x)['feat'], conv * 2)
    with pytest.raises(ValueError, match="'mul' is not present in the model traced in eval mode"):
        fzfx.create_feature_extractor(model, return_nodes=['mul'], suppress_diff_warning=True)


def test_extractor_is_copyable_and_retraceable():
    ext = fzfx.create_feature_extractor(tv_model('resnet50'), {'layer1': 'a', 'layer2': 'b'})
    clone = copy.deepcopy(ext)
    x = _image()
    with torch.no_grad():
        for key, value in ext(x).items():
            assert_equal(clone(x)[key], value, key)
        clone.train()
        assert clone.graph is clone.train_graph and ext.graph is ext.eval_graph
    assert fzfx.get_graph_node_names(ext)[1][-1] == 'layer2.3.relu_2'


# ---- bad requests --------------------------------------------------------------------------------------------------

def test_bad_return_node_requests_are_value_errors():
    model = _Nested()
    with pytest.raises(ValueError, match=r"'a\.ad' is not present.*closest names: \[.*'a\.add'"):
        fzfx.create_feature_extractor(model, ['a.ad'])
    with pytest.raises(ValueError, match='not both'):
        fzfx.create_feature_extractor(model, ['a'], train_return_nodes=['a'], eval_return_nodes=['a'])
    with pytest.raises(ValueError, match='train_return_nodes was given alone'):
        fzfx.create_feature_extractor(model, train_return_nodes=['a'])
    with pytest.raises(ValueError, match='eval_return_nodes was given alone'):
        fzfx.create_feature_extractor(model, eval_return_nodes=['a'])
    with pytest.raises(ValueError, match='give return_nodes'):
        fzfx.create_feature_extractor(model)
    with pytest.raises(ValueError, match="same output name: {'out': \\['a', 'b'\\]}"):
        fzfx.create_feature_extractor(model, {'a': 'out', 'b': 'out'})
    with pytest.raises(ValueError, match='more than once'):
        fzfx.create_feature_extractor(model, ['a', 'a'])
    with pytest.raises(ValueError, match='is empty'):
        fzfx.create_feature_extractor(model, [])
    with pytest.raises(TypeError, match='list of node names or a dict'):
        fzfx.create_feature_extractor(model, 'a')
    with pytest.raises(ValueError, match=r"unknown tracer_kwargs \['leafs'\]"):
        fzfx.get_graph_node_names(model, tracer_kwargs={'leafs': [nn.ReLU]})
    with pytest.raises(TypeError, match='nn.Module'):
        fzfx.get_graph_node_names(lambda x: x)
    with pytest.raises(ValueError, match='input_size'):
        fzfx.get_graph_node_info(model, input_size=(3, -1, 8))


def test_truncated_name_is_the_last_node_under_the_path():
    model = tv_model('resnet50')
    ext = fzfx.create_feature_extractor(model, {'layer4': 'short', 'layer4.2.relu_2': 'full', 'layer4.2': 'block'})
    with torch.no_grad():
        out = ext(_image())
    assert_equal(out['short'], out['full'])
    assert_equal(out['block'], out['full'])
    assert 'layer4.2.relu_2' in fzfx.get_graph_node_names(model)[0]


# ---- the seeds' examples -------------------------------------------------------------------------------------------

def test_seed_resnet18_docstring_example():
    # Seed 002, create_feature_extractor's first example, with featzoo's function.
    model = torchvision.models.resnet18()
    model = featzoo.create_feature_extractor(model, {'layer1': 'feat1', 'layer3': 'feat2'})
    out = model(torch.rand(1, 3, 224, 224))
    assert [(k, v.shape) for k, v in out.items()] == [('feat1', torch.Size([1, 64, 56, 56])),
                                                     ('feat2', torch.Size([1, 256, 14, 14]))]
    train_nodes, eval_nodes = featzoo.get_graph_node_names(torchvision.models.resnet18())
    assert train_nodes == eval_nodes and train_nodes[-1] == 'fc'


def leaf_function(x):
    # This would raise a TypeError if traced through
    return int(x)


class LeafModule(torch.nn.Module):
    def forward(self, x):
        # This would raise a TypeError if traced through
        int(x.shape[0])
        return torch.nn.functional.relu(x + 4)


class MyModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3)
        self.leaf_module = LeafModule()

    def forward(self, x):
        leaf_function(x.shape[0])
        x = self.conv(x)
        return self.leaf_module(x)


def test_seed_leaf_module_and_leaf_function_example():
    # Seed 002, the leaf module / leaf function example, functions at module level as in the seed.
    with pytest.raises((TypeError, fx.proxy.TraceError)):
        featzoo.create_feature_extractor(MyModule(), return_nodes=['leaf_module'])
    source = MyModule()
    model = featzoo.create_feature_extractor(
        source, return_nodes=['leaf_module'],
        tracer_kwargs={'leaf_modules': [LeafModule],
                       'autowrap_functions': [leaf_function]})
    x = _image((2, 3, 8, 8))
    with torch.no_grad():
        assert_equal(model(x)['leaf_module'], torch.relu(source.conv(x) + 4))
    names = featzoo.get_graph_node_names(source, tracer_kwargs={'leaf_modules': [LeafModule],
                                                                'autowrap_functions': [leaf_function]})[0]
    assert names == tvfe.get_graph_node_names(source, tracer_kwargs={'leaf_modules': [LeafModule],
                                                                     'autowrap_functions': [leaf_function]})[0]
    assert 'leaf_function' in names and 'leaf_module' in names


def test_seed_maskrcnn_with_fpn_example():
    # Seed 001, verbatim apart from featzoo's functions in place of torchvision's feature_extraction module.
    from torchvision.models import resnet50
    from featzoo import get_graph_node_names
    from featzoo import create_feature_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.models.detection.backbone_utils import LastLevelMaxPool
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

    m = resnet50()
    train_nodes, eval_nodes = get_graph_node_names(resnet50())
    assert train_nodes == eval_nodes
    return_nodes = {
        'layer1.2.relu_2': 'layer1',
        'layer2.3.relu_2': 'layer2',
        'layer3.5.relu_2': 'layer3',
        'layer4.2.relu_2': 'layer4',
    }
    assert set(return_nodes) <= set(train_nodes)
    return_nodes = {
        'layer1': 'layer1',
        'layer2': 'layer2',
        'layer3': 'layer3',
        'layer4': 'layer4',
    }
    body = create_feature_extractor(m, return_nodes=return_nodes)
    with torch.no_grad():
        out = body(torch.randn(1, 3, 64, 64))
    assert list(out) == ['layer1', 'layer2', 'layer3', 'layer4']

    class Resnet50WithFPN(torch.nn.Module):
        def __init__(self):
            super(Resnet50WithFPN, self).__init__()
            m = resnet50()
            self.body = create_feature_extractor(
                m, return_nodes={f'layer{k}': str(v)
                                 for v, k in enumerate([1, 2, 3, 4])})
            inp = torch.randn(2, 3, 224, 224)
            with torch.no_grad():
                out = self.body(inp)
            in_channels_list = [o.shape[1] for o in out.values()]
            self.out_channels = 256
            self.fpn = FeaturePyramidNetwork(
                in_channels_list, out_channels=self.out_channels,
                extra_blocks=LastLevelMaxPool())

        def forward(self, x):
            x = self.body(x)
            x = self.fpn(x)
            return x

    model = MaskRCNN(Resnet50WithFPN(), num_classes=91).eval()
    assert model.backbone.fpn.inner_blocks[3][0].in_channels == 2048
    assert model.backbone.body.feature_info.channels() == [256, 512, 1024, 2048]
    model.transform.min_size, model.transform.max_size = (96,), 96  # a small image keeps the check fast
    with torch.no_grad():
        detections = model([torch.rand(3, 96, 96)])
    assert set(detections[0]) == {'boxes', 'labels', 'scores', 'masks'}


# ---- node info ---------------------------------------------------------------------------------------------------

def _featzoo_model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return featzoo.create_model(name, **kwargs).eval()


NODE_INFO_MODELS = [
    ('tv:resnet50', lambda: tv_model('resnet50')),
    ('tv:swin_t', lambda: tv_model('swin_t')),
    ('tv:vit_b_16', lambda: tv_model('vit_b_16')),
    ('resnet18', lambda: _featzoo_model('resnet18')),
    ('vit_tiny_patch16_224', lambda: _featzoo_model('vit_tiny_patch16_224')),
]


@pytest.mark.parametrize('label,make', NODE_INFO_MODELS, ids=[m[0] for m in NODE_INFO_MODELS])
def test_node_info_shapes_equal_real_forward(label, make):
    if not label.startswith('tv:') and label not in featzoo.list_models():
        pytest.skip(f'{label} is not registered yet')
    model = make()
    x = _image((2, 3, 64, 64))
    real = _real_node_shapes(model, x)
    infos = fzfx.get_graph_node_info(model, input_size=(3, 64, 64), batch_size=2)
    assert [i.name for i in infos] == fzfx.get_graph_node_names(model)[1]
    assert {i.name: i.shape for i in infos} == real
    for info in infos:
        if info.shape is not None and len(info.shape) == 4:
            assert info.channels == info.shape[1] and info.reduction == math.ceil(64 / info.shape[2])
        elif info.shape is not None and len(info.shape) == 3:
            assert info.channels == info.shape[-1] and info.reduction is None
        else:
            assert info.channels is None and info.reduction is None
    assert model.training is False


def test_node_info_fields_on_resnet50():
    with torch.device('meta'):
        model = torchvision.models.resnet50()  # meta weights: node info never needs real ones
    infos = {i.name: i for i in fzfx.get_graph_node_info(model)}
    assert infos['x'] == fzfx.NodeInfo('x', 'placeholder', 'x', (1, 3, 224, 224), torch.float32, 3, 1)
    assert infos['conv1'] == fzfx.NodeInfo('conv1', 'call_module', 'conv1', (1, 64, 112, 112), torch.float32, 64, 2)
    assert infos['layer4.2.relu_2'].channels == 2048 and infos['layer4.2.relu_2'].reduction == 32
    assert infos['layer1.0.add'].op == 'call_function' and infos['layer1.0.add'].target == 'operator.add'
    assert infos['flatten'].target == 'torch.flatten' and infos['flatten'].shape == (1, 2048)
    assert infos['fc'].shape == (1, 1000) and infos['fc'].channels is None
    assert all(p.is_meta for p in model.parameters())


def test_node_info_train_mode_and_uncomputable_nodes():
    model = _ModeDependent()
    train_names = [i.name for i in fzfx.get_graph_node_info(model, (3, 8, 8), train=True)]
    assert 'mul' in train_names and model.training

    class DataDependent(nn.Module):
        def forward(self, x):
            idx = torch.nonzero(x > 0)
            return idx.float().sum() + x.mean()

    with pytest.warns(UserWarning, match='nonzero'):
        infos = {i.name: i for i in fzfx.get_graph_node_info(DataDependent(), (4,))}
    assert infos['x'].shape == (1, 4) and infos['mean'].shape == ()
    assert infos['nonzero'].shape is None and infos['add'].shape is None


def test_node_info_leaves_the_model_untouched():
    model = tv_model('resnet50')
    tensors = list(model.parameters()) + list(model.buffers())
    values = [t.clone() for t in tensors]
    attrs = set(vars(model))
    fzfx.get_graph_node_info(model, (3, 32, 32))
    after = list(model.parameters()) + list(model.buffers())
    assert len(after) == len(tensors) and all(a is b for a, b in zip(after, tensors))
    assert all(torch.equal(a, v) for a, v in zip(after, values))
    assert set(vars(model)) == attrs


# ---- feature_info on extractors ------------------------------------------------------------------------------------

def test_extractor_feature_info_is_lazy_and_correct():
    model = tv_model('resnet50')
    ext = fzfx.create_feature_extractor(model, {f'layer{i}': str(i) for i in (4, 1, 2, 3)})
    assert '_feature_info' not in ext.__dict__
    info = ext.feature_info
    assert info.channels() == [2048, 256, 512, 1024] and info.reduction() == [32, 4, 8, 16]
    assert info.module_name() == ['layer4', 'layer1', 'layer2', 'layer3']
    assert info.get('shape')[0] == (1, 2048, 7, 7)  # torchvision models carry no pretrained cfg: 224 px
    small = fzfx.create_feature_extractor(model, ['layer2'], input_size=(3, 64, 64))
    assert small.feature_info.get('shape') == [(1, 512, 8, 8)] and small.feature_info.reduction() == [8]


def test_extractor_feature_info_uses_pretrained_size_and_channels():
    if 'resnet18' not in featzoo.list_models():
        pytest.skip('resnet18 is not registered yet')
    model = _featzoo_model('resnet18', in_chans=1)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, 96, 96))
    ext = fzfx.create_feature_extractor(model, ['layer3', 'global_pool'])
    assert ext.feature_info.channels() == [256, None] and ext.feature_info.get('shape')[0] == (1, 256, 6, 6)


def test_extractor_feature_info_needs_one_image_tensor():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, image, mask):
            return self.conv(image) * mask

    ext = fzfx.create_feature_extractor(TwoInputs(), ['conv'])
    with pytest.raises(RuntimeError, match=r"one image tensor; TwoInputs takes \['image', 'mask'\]"):
        ext.feature_info

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(16, 8)

        def forward(self, x):
            return self.proj(x)

    ext = fzfx.create_feature_extractor(Tokens(), ['proj'])
    with pytest.raises(RuntimeError, match=r'pass input_size=\(C, H, W\)'):
        ext.feature_info
    ext = fzfx.create_feature_extractor(Tokens(), ['proj'], input_size=(10, 16))
    assert ext.feature_info.channels() == [8] and ext.feature_info.reduction() == [None]


# ---- notrace registry ----------------------------------------------------------------------------------------------

def opaque_count(x):
    return int(x.shape[0])


class OpaqueBlock(nn.Module):
    def forward(self, x):
        return x * 2 if int(x.shape[0]) > 0 else x


class UsesOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = OpaqueBlock()

    def forward(self, x):
        opaque_count(x)
        return self.block(x) + 1


def test_notrace_registry_makes_leaves():
    with pytest.raises((TypeError, fx.proxy.TraceError)):
        fzfx.get_graph_node_names(UsesOpaque())
    assert register_notrace_module(OpaqueBlock) is OpaqueBlock
    assert register_notrace_function(opaque_count) is opaque_count
    register_notrace_module(OpaqueBlock)
    assert get_notrace_modules().count(OpaqueBlock) == 1 and get_notrace_functions().count(opaque_count) == 1
    assert is_notrace_module(OpaqueBlock) and is_notrace_function(opaque_count)
    assert fzfx.get_graph_node_names(UsesOpaque())[0] == ['x', 'opaque_count', 'block', 'add']
    with pytest.raises(TypeError, match='nn.Module subclass'):
        register_notrace_module(OpaqueBlock())
    with pytest.raises(TypeError, match='expects a function'):
        register_notrace_function(OpaqueBlock)


def _module_from_source(name: str, source: str):
    import sys
    import types
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f'<{name}>', 'exec'), module.__dict__)
    return module


def test_notrace_functions_wrap_in_the_modules_of_an_inherited_forward():
    """A family whose ``forward`` comes from a shared base in another module: the no-trace function its own
    ``forward_features`` calls is still a leaf (torch.fx alone looks only in the module of ``forward``)."""
    import sys
    base = _module_from_source('featzoo_test_shared_base', (
        'from torch import nn\n'
        'class Base(nn.Module):\n'
        '    def forward(self, x):\n'
        '        return self.head(self.forward_features(x))\n'))
    family = _module_from_source('featzoo_test_family', (
        'from torch import nn\n'
        'import featzoo_test_shared_base as shared\n'
        'def width_scaled(x):\n'
        '    return x * int(x.shape[-1])  # a Python int of a traced size: FX cannot trace through it\n'
        'class Net(shared.Base):\n'
        '    def __init__(self):\n'
        '        super().__init__()\n'
        '        self.head = nn.Identity()\n'
        '    def forward_features(self, x):\n'
        '        return width_scaled(x) + 1\n'))
    try:
        register_notrace_function(family.width_scaled)
        model = family.Net()
        assert fzfx.get_graph_node_names(model)[1] == ['x', 'width_scaled', 'add', 'head']
        extractor = fzfx.create_feature_extractor(model, ['width_scaled'])
        x = torch.ones(1, 2, 3)
        assert_equal(extractor(x)['width_scaled'], x * 3, 'wrapped function output')
        assert base.Base.forward is family.Net.forward
    finally:
        sys.modules.pop('featzoo_test_shared_base', None)
        sys.modules.pop('featzoo_test_family', None)


# ---- feature_cls='fx' on featzoo models -----------------------------------------------------------------------------

def _family_representatives() -> List[str]:
    """The smallest model of each family (by total feature channels, then name length)."""
    best: Dict[str, Tuple[tuple, str]] = {}
    for name in featzoo.list_models():
        entry = registry.get_arch_entry(name)
        if 'fx' not in entry['feature_cls']:
            continue
        levels = entry['feature_levels'][str(max(entry['output_strides']))]
        key = (sum(level['num_chs'] for level in levels), len(name), name)
        if entry['family'] not in best or key < best[entry['family']][0]:
            best[entry['family']] = (key, name)
    return sorted(name for _, name in best.values())


REPRESENTATIVES = _family_representatives()
OTHERS = [n for n in slow_matrix()
          if n not in REPRESENTATIVES and 'fx' in registry.get_arch_entry(n)['feature_cls']]


def _check_fx_equals_default(name: str, sizes=(64,), overrides: Optional[Dict[str, Any]] = None) -> None:
    torch.manual_seed(0)
    overrides = overrides or {}
    # No stochastic depth, so train mode is deterministic and the train graphs can be compared too.
    ref = featzoo.create_model(name, features_only=True, drop_path_rate=0.0, **overrides)
    model = featzoo.create_model(name, features_only=True, feature_cls='fx', drop_path_rate=0.0, **overrides)
    model.load_state_dict(ref.state_dict(), strict=True)  # the same keys as the default wrapper
    assert model.feature_info.get_dicts() == ref.feature_info.get_dicts()
    for mode in ('eval', 'train'):
        getattr(ref, mode)(), getattr(model, mode)()
        for size in sizes:
            x = _image((2, 3, size, size))
            with torch.no_grad():  # the same random stream for both: some blocks keep a fixed dropout (timm's)
                torch.manual_seed(1)
                expected = list(ref(x))
                torch.manual_seed(1)
                got = model(x)
            assert isinstance(got, list) and len(got) == len(expected)
            for i, (a, b) in enumerate(zip(got, expected)):
                assert_equal(a, b, f'{name} {mode} {size}px level {i}')


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_fx_wrapper_equals_default_wrapper(name):
    _check_fx_equals_default(name, sizes=(64, 96))


@pytest.mark.slow
@pytest.mark.parametrize('name', OTHERS)
def test_fx_wrapper_equals_default_wrapper_all_models(name):
    _check_fx_equals_default(name, sizes=(behaviour_side(name),), overrides=slow_overrides(name))


def _needs(name: str) -> None:
    if name not in featzoo.list_models():
        pytest.skip(f'{name} is not registered yet')


def test_fx_wrapper_return_nodes_and_formats():
    _needs('resnet18')
    model = featzoo.create_model('resnet18', features_only=True, feature_cls='fx',
                                 return_nodes={'layer3': 'c4', 'layer1.1.add': 'res'}).eval()
    full = _featzoo_model('resnet18')
    model.load_state_dict({k: v for k, v in full.state_dict().items() if k in model.state_dict()}, strict=True)
    assert not any(k.startswith(('layer4.', 'fc.')) for k in model.state_dict())
    assert '_feature_info' not in model.__dict__
    x = _image()
    with torch.no_grad():
        out = model(x)
        reference = fzfx.create_feature_extractor(full, {'layer3': 'c4', 'layer1.1.add': 'res'})(x)
    assert list(out) == ['c4', 'res']
    for key in out:
        assert_equal(out[key], reference[key], key)
    assert model.feature_info.channels() == [256, 64] and model.feature_info.reduction() == [16, 4]
    as_list = featzoo.create_model('resnet18', features_only=True, feature_cls='fx', return_nodes=['layer2'])
    assert isinstance(as_list(x), list)
    with pytest.raises(ValueError, match='return_nodes or out_indices'):
        featzoo.create_model('resnet18', features_only=True, feature_cls='fx', return_nodes=['layer2'],
                             out_indices=(1,))
    with pytest.raises(ValueError, match='return_nodes or out_indices'):
        fzfx.FeatureFxNet(_featzoo_model('resnet18'), out_indices=(1,), return_nodes=['layer2'])
    with pytest.raises(ValueError, match="'layer9' is not present"):
        featzoo.create_model('resnet18', features_only=True, feature_cls='fx', return_nodes=['layer9'])

    torch.manual_seed(0)
    nhwc = featzoo.create_model('resnet18', features_only=True, feature_cls='fx', output_fmt='NHWC',
                                out_indices=(1, 3), out_map=('a', 'b')).eval()
    ref = featzoo.create_model('resnet18', features_only=True, feature_cls='hook', output_fmt='NHWC',
                               out_indices=(1, 3), out_map=('a', 'b')).eval()
    nhwc.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        got, expected = nhwc(x), ref(x)
    assert list(got) == ['a', 'b']
    for key in got:
        assert_equal(got[key], expected[key], key)
    with pytest.raises(ValueError, match='use feature_cls=.getter'):
        fzfx.FeatureFxNet(_featzoo_model('resnet18'), norm=True)


@pytest.mark.parametrize('name,kwargs', [('resnet18', {}), ('swin_tiny_patch4_window7_224', dict(img_size=64))])
def test_fx_wrapper_loads_weights_built_on_meta(weights_file, name, kwargs):
    # create_model builds on the meta device when weights are given; computed buffers (Swin's relative position
    # index) must be rebuilt by the owning modules, which the wrapper keeps.
    _needs(name)
    path, _ = weights_file(name, **kwargs)
    ref = featzoo.create_model(name, features_only=True, checkpoint_path=path, out_indices=(0, 2), **kwargs).eval()
    model = featzoo.create_model(name, features_only=True, feature_cls='fx', checkpoint_path=path,
                                 out_indices=(0, 2), **kwargs).eval()
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    x = _image()
    with torch.no_grad():
        for a, b in zip(model(x), ref(x)):
            assert_equal(a, b)


def test_fx_wrapper_token_levels_and_copies():
    name = 'vit_tiny_patch16_224'
    _needs(name)
    full = _featzoo_model(name)
    model = fzfx.FeatureFxNet(copy.deepcopy(full), out_indices=(-1, 3), output_fmt='NHWC').eval()
    x = _image((2, 3, 48, 80))
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=[3, 11], intermediates_only=True)
        got = model(x)
        clone = copy.deepcopy(model)
        for a, b, c in zip(got, expected, clone(x)):
            assert_equal(a, b.permute(0, 2, 3, 1))
            assert_equal(c, a)
    assert got[0].shape == (2, 3, 5, 192)
    assert fzfx.get_graph_node_names(model)[1][-1].startswith('_tokens_to_map')


# ---- FX graphs compute what eager computes, bit for bit (timm's test_model_forward_fx) -----------------------------

def _forward_features_twin(model: nn.Module) -> nn.Module:
    """The model (sharing its submodules) with ``forward_features`` as its forward, so that FX traces exactly that
    method. A subclass rather than a wrapper module: FX wraps the notrace functions found in the globals of the root's
    forward, which must be the family module's."""
    cls = type(f'{type(model).__name__}ForwardFeatures', (type(model),), {'forward': type(model).forward_features})
    twin = copy.copy(model)
    twin.__class__ = cls
    return twin


def _traced_twin(module: nn.Module) -> nn.Module:
    # as timm's test builds it: an extractor whose one return node is the last node of the eval graph
    last = fzfx.get_graph_node_names(module)[1][-1]
    return fzfx.create_feature_extractor(module, return_nodes=[last])




@pytest.mark.parametrize('name', representatives())
def test_fx_graph_equals_eager_bit_for_bit(name):
    """The FX-traced forward and forward_features of every family's smallest model return exactly the eager
    numbers in the same memory layout: no layout conversion or other branch that only the eager run takes."""
    kwargs, side = smallest_input(name)
    x = _image((1, 3, side, side), seed=7)
    model = featzoo.create_model(name, **kwargs).eval()
    randomize_state(model)
    for what, module in (('forward', model), ('forward_features', _forward_features_twin(model))):
        traced = _traced_twin(module).eval()
        with torch.no_grad():
            eager = module(x)
            (got,) = traced(x).values()
        assert got.shape == eager.shape, f'{name} {what}: {tuple(got.shape)} != {tuple(eager.shape)}'
        assert torch.all(got == eager), f'{name} {what}: max |fx - eager| = {(got - eager).abs().max().item():.3e}'
        assert got.stride() == eager.stride(), f'{name} {what}: strides {got.stride()} != {eager.stride()}'
