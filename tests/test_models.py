"""What every registered family must satisfy, parametrized over the registry: a new family or variant gets these checks
with no new test code. The family files (tests/test_models_<family>.py) keep what is specific to one family.

- the family spec's variants and wrappers are what the registry lists; pinned feature modules;
- chosen rows compute what timm computes at output strides 16 and 8 (each family's representative at every stride,
  besides the rows of DILATED_PARITY);
- forward_intermediates / prune_intermediate_layers and the model contract (heads, reset_classifier) are timm's;
- dilated models keep the stride-32 parameters, and their levels tap the same modules at capped reductions, in the
  shapes those reductions imply;
- every declared feature wrapper returns what the default wrapper returns, at every output stride, without the head.

Parity with timm across the registry (keys and shapes of every architecture, numerics per configuration, the seeded
sample, everything with -m slow) is tests/test_parity_timm.py. The expensive checks here run one representative per
family (tests/helpers.py: family_representative) or per configuration by default, every variant with -m slow. The
tables below hold what differs between the first families (rows chosen for a code path, facts a family file used to
pin); a new family needs none of them.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile

import pytest
import torch

import featzoo
from featzoo import registry
from helpers import (CONFIGURATION_MAX_PARAMS, assert_equal, build_timm_reference, check_feature_shapes,
                     configurations, family_representative, input_side_for, meta_device, num_params, numeric_parity,
                     randomize_state, save_state, size_kwargs)

ALL = featzoo.list_models()
FAMILIES = featzoo.list_modules()
REPRESENTATIVE = {family: family_representative(family) for family in FAMILIES}
# the structure check's default rows: each family's representative and each configuration's smallest architecture
# up to CONFIGURATION_MAX_PARAMS (the big ones' parameters and levels per stride: test_parity_timm, on the meta device)
STRUCTURE_DEFAULT = set(REPRESENTATIVE.values()) | {name for name in configurations()
                                                     if num_params(name) <= CONFIGURATION_MAX_PARAMS}
SIDE = 32  # input side of the structure and intermediates checks (4 x 4 maps at output stride 8)
ALL_WRAPPERS = frozenset({'list', 'dict', 'hook', 'fx', 'getter'})

# ---- per-family data ---------------------------------------------------------------------------------------------

# Facts about a family that its own file used to pin: how many variants it registers, which wrappers it declares.
PINNED = {
    'densenet': dict(variants=6, feature_cls=ALL_WRAPPERS),
    'efficientnet': dict(feature_cls=ALL_WRAPPERS),
    'regnet': dict(variants=36, feature_cls=ALL_WRAPPERS),
    'resnest': dict(variants=8, feature_cls=ALL_WRAPPERS),
    'vovnet': dict(variants=10, feature_cls=ALL_WRAPPERS),
}

# The modules the feature levels tap, per family (every variant) or per variant; `...` first: the last ones only.
FEATURE_MODULES = {
    'resnest': ('act1', 'layer1', 'layer2', 'layer3', 'layer4'),
    'regnet': ('stem', 's1', 's2', 's3', 's4'),
    'densenet': (..., 'features.norm5'),
    'vovnet': (..., 'stages.3'),
    'mobilenetv2_035': ('blocks.0', 'blocks.1', 'blocks.2', 'blocks.4', 'blocks.6'),
    'mobilenetv3_small_050': ('bn1', 'blocks.0', 'blocks.1', 'blocks.3', 'blocks.5'),
}

# Families that check timm parity, forward_intermediates/prune_intermediate_layers and the model contract in their own
# file, and why.
IN_FAMILY_FILE = {
    'vision_transformer': 'every variant at depth 2 with dynamic input sizes (full depth with -m slow); token outputs, '
                          'prefix tokens and NHWC intermediates',
    'swin_transformer': 'img_size=64 and a direct state_dict load (no file round trip) for the big variants; NHWC '
                        'outputs and intermediates at any input size',
    'deit': 'the VisionTransformer of vision_transformer: token outputs and NHWC intermediates; one architecture per '
            'configuration at depth 2, every architecture with -m slow',
    'eva': 'one architecture per configuration at depth 2 built for the small input (timm builds them for one size); '
           'RoPE at other sizes against timm with dynamic_img_size=True; every architecture with -m slow',
    'hrnet': 'a model pruned to some branches returns the list of branch maps, as timm\'s: forward_intermediates, '
             'pruning and the contract against timm compare lists, and refuse a classifier on the branch maps',
}

# One ResNet of each kind: basic and bottleneck blocks, deep stem and avg-pool shortcut, ECA, SE with groups.
RESNETS = ('resnet18', 'resnet50d', 'ecaresnet26t', 'seresnext26d_32x4d')

# Dilated parity rows of the default suite; a family not listed runs its representative at every output stride. Where
# timm cannot be the reference (its classifier takes no output_stride: densenet, mobilenetv3, vovnet; or drops a
# parameter when dilated: xception71 at 8) the row skips and the family's own file checks the dilated levels.
DILATED_PARITY = {
    'resnet': [(n, s) for n in RESNETS for s in (16, 8)],
    # radix 2 with the avd pool after the split conv (resnest14d), radix 4 x cardinality 2 with the pool before it,
    # radix 1 (sigmoid gate) x cardinality 4: every split-attention and avd code path
    'resnest': [(n, s) for n in ('resnest14d', 'resnest50d_4s2x40d', 'resnest50d_1s4x24d') for s in (16, 8)],
    # X (no squeeze-excite) and Y; regnety_004's first stage has a single block, so at output stride 8 its dilated
    # stages start from a dilation-2 first block (the case RegStage treats specially)
    'regnet': [(n, s) for n in ('regnetx_002', 'regnety_004') for s in (16, 8)],
    'xception_aligned': [('xception41', 16), ('xception41p', 8)],
    'convnext': [('convnext_atto', 16), ('convnext_atto', 8), ('convnext_tiny', 8)],
    # every block type (ds, ir with and without squeeze-excite, er, cn) under both paddings (PyTorch, TF 'same')
    'efficientnet': [(n, s) for n in ('efficientnet_b0', 'tf_efficientnet_b0', 'mobilenetv2_050', 'tf_efficientnetv2_s')
                     for s in (16, 8)],
}

# Every declared wrapper is compared with the default one on each family's representative at every output stride, and
# on these (variant, output_stride) besides: squeeze-excite (regnety_002), blur pooling (densenetblur121d), a
# non-preactivated xception and TF 'same' padding (tf_*) are what FX tracing has to get through.
WRAPPER_EXTRA = [('regnety_002', 32), ('densenetblur121d', 16), ('ese_vovnet19b_slim', 8), ('xception41', 32),
                 ('tf_efficientnet_b0', 32), ('tf_mobilenetv3_large_100', 32)]

# Variants whose forward_intermediates and prune_intermediate_layers are compared with timm's; a family not listed uses
# its representative. Families without the getter wrapper have no forward_intermediates.
INTERMEDIATES_MODELS = {
    'regnet': ('regnety_002',),
    'efficientnet': ('tf_efficientnet_b0',),
    'mobilenetv3': ('mobilenetv3_small_100',),
}

# The model each family's contract (num_features, heads, reset_classifier) is checked on; a family not listed uses its
# representative.
CONTRACT_MODELS = {
    'resnet': 'resnet50',
    'regnet': 'regnety_002',
    'vovnet': 'ese_vovnet19b_slim',
    'efficientnet': 'efficientnet_b0',
    'mobilenetv3': 'mobilenetv3_large_100',  # the efficient head: pooling before the head convolution
}

# reset_classifier arguments that leave featzoo's model as they leave timm's.
RESET_ARGS = [(10,), (0,), (0, ''), (5, 'catavgmax'), (7, 'avg')]

# reset_classifier arguments featzoo refuses (ValueError), and what the message names: for every family, then per family
# (where timm would build a head that cannot work, or one featzoo does not offer).
RESET_REFUSED_BY_ALL = {(3, 'bogus'): "'bogus'", (-1,): 'num_classes'}
RESET_REFUSED = {
    'xception_aligned': {(5, 'mean'): 'global_pool'},
    'convnext': {(5, 'catavgmax'): 'catavgmax'},
    'efficientnet': {(10, ''): "global_pool=''"},
    'mobilenetv3': {(5, 'catavgmax'): 'catavgmax', (0, 'catavgmax'): 'catavgmax', (5, ''): "global_pool=''"},
}

# Head modules besides the classifier that a features-only model must not hold.
HEAD_MODULES = {
    'efficientnet': ('conv_head', 'bn2'),
    'mobilenetv3': ('conv_head',),
}


# ---- helpers -----------------------------------------------------------------------------------------------------

def _family(name: str) -> str:
    return featzoo.model_capabilities(name).family


def _natural(name: str) -> int:
    return max(featzoo.model_capabilities(name).output_strides)


def _dilated(name: str) -> list:
    """The output strides below the model's natural one, largest first."""
    return sorted((s for s in featzoo.model_capabilities(name).output_strides if s != _natural(name)), reverse=True)


def _shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _levels(info) -> list:
    """A model's feature_info (a wrapper's: its selected levels) as the index writes them."""
    return [dict(num_chs=d['num_chs'], reduction=d['reduction'], module=d['module']) for d in info]


def _index_levels(name: str, stride: int) -> list:
    return [dict(num_chs=d['num_chs'], reduction=d['reduction'], module=d['module'])
            for d in featzoo.model_capabilities(name).feature_levels_by_stride[stride]]


def _timm_pair(name: str, side: int):
    """timm's model with random weights and featzoo's loaded from them (via a checkpoint file), both in eval mode and
    built for ``side`` px inputs where the family fixes the input size at construction."""
    kwargs = size_kwargs(name, side)
    ref = build_timm_reference(name, **kwargs)
    path = save_state(ref.state_dict())
    try:
        return ref, featzoo.create_model(name, checkpoint_path=path, **kwargs).eval()
    finally:
        os.remove(path)
        os.rmdir(os.path.dirname(path))


def _rows(names, default=None, ids=lambda row: str(row)):
    """pytest params: the rows in ``default`` (every row where it is None) run by default, the others with -m slow."""
    return [pytest.param(*(row if isinstance(row, tuple) else (row,)), id=ids(row),
                         marks=() if default is None or row in default else pytest.mark.slow) for row in names]


def _row_id(row) -> str:
    return f'{row[0]}-os{row[1]}'


def _dilated_default() -> list:
    rows = []
    for family in FAMILIES:
        rep = REPRESENTATIVE[family]
        rows += DILATED_PARITY.get(family, [(rep, s) for s in _dilated(rep)])
    return rows


def _structure_rows() -> list:
    return [n for n in ALL if len(featzoo.model_capabilities(n).output_strides) > 1]


def _intermediates_rows() -> list:
    return [name for family, rep in REPRESENTATIVE.items()
            if family not in IN_FAMILY_FILE and 'getter' in featzoo.model_capabilities(rep).feature_cls
            for name in INTERMEDIATES_MODELS.get(family, (rep,))]


def _contract_rows() -> list:
    return [CONTRACT_MODELS.get(family, rep) for family, rep in REPRESENTATIVE.items() if family not in IN_FAMILY_FILE]


def _wrapper_rows() -> list:
    models = [(rep, s) for rep in REPRESENTATIVE.values() for s in [_natural(rep)] + _dilated(rep)] + WRAPPER_EXTRA
    caps = featzoo.model_capabilities
    return [(name, stride, cls) for name, stride in models
            for cls in caps(name).feature_cls if cls != caps(name).default_feature_cls]


# ---- the tables ----------------------------------------------------------------------------------------------------

def test_tables_name_registered_families_and_variants():
    """A renamed family or variant must not silently drop out of a check."""
    families = set(PINNED) | set(IN_FAMILY_FILE) | set(DILATED_PARITY) | set(INTERMEDIATES_MODELS) \
        | set(HEAD_MODULES) | set(CONTRACT_MODELS) | set(RESET_REFUSED)
    assert families <= set(FAMILIES), sorted(families - set(FAMILIES))
    for key in FEATURE_MODULES:
        assert key in FAMILIES or key in ALL, key
    tables = dict(DILATED_PARITY=[n for rows in DILATED_PARITY.values() for n, _ in rows],
                  WRAPPER_EXTRA=[n for n, _ in WRAPPER_EXTRA],
                  INTERMEDIATES_MODELS=[(f, n) for f, names in INTERMEDIATES_MODELS.items() for n in names],
                  CONTRACT_MODELS=list(CONTRACT_MODELS.items()))
    for table, rows in tables.items():
        for row in rows:
            family, name = row if isinstance(row, tuple) else (None, row)
            assert name in ALL, f'{table}: {name} is not registered'
            assert family is None or _family(name) == family, f'{table}: {name} is not a {family}'
    for family, rows in DILATED_PARITY.items():
        for name, stride in rows:
            assert _family(name) == family and stride in _dilated(name), (family, name, stride)
    for name, stride in WRAPPER_EXTRA:
        assert stride in featzoo.model_capabilities(name).output_strides, (name, stride)
    assert set(REPRESENTATIVE) == set(FAMILIES)


# ---- the registry and the family tables ----------------------------------------------------------------------------

@pytest.mark.parametrize('family', FAMILIES)
def test_every_variant_is_listed(family):
    spec = registry.family_spec(family)
    names = featzoo.list_models(module=family)
    assert names == sorted(spec.variants, key=registry._natural_key)
    assert [featzoo.model_capabilities(n).feature_cls for n in names] == [spec.feature_cls_for(n) for n in names]
    pinned = PINNED.get(family, {})
    if 'variants' in pinned:
        assert len(names) == pinned['variants']
    if 'feature_cls' in pinned:
        assert {c for n in names for c in spec.feature_cls_for(n)} == pinned['feature_cls']


# ---- parity with timm ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('key', sorted(FEATURE_MODULES))
def test_feature_modules_are_pinned(key):
    """The modules a family's (or a variant's) levels tap, as the index records them (test_registry holds the index to
    the built models, test_parity_timm both to timm's)."""
    pinned = FEATURE_MODULES[key]
    for name in featzoo.list_models(module=key) if key in FAMILIES else [key]:
        modules = [level['module'] for level in featzoo.model_capabilities(name).feature_levels]
        if pinned[0] is Ellipsis:
            assert modules[len(modules) - len(pinned) + 1:] == list(pinned[1:]), (name, modules)
        else:
            assert modules == list(pinned), (name, modules)


@pytest.mark.parametrize('name,output_stride', _rows(_dilated_default(), ids=_row_id))
def test_timm_parity_dilated(name, output_stride):
    """Every output stride timm's model takes; every row with -m slow is tests/test_parity_timm.py."""
    numeric_parity(name, output_stride)


@pytest.mark.parametrize('name', _intermediates_rows())
def test_forward_intermediates_and_prune_match_timm(name):
    side = input_side_for(name, SIDE)
    ref, model = _timm_pair(name, side)
    n = len(model.feature_info)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for indices in (None, 2, 3, (0, n - 2), tuple(range(0, n, 2)), [0, -1]):
            final, inter = model.forward_intermediates(x, indices=indices)
            ref_final, ref_inter = ref.forward_intermediates(x, indices=indices)
            assert_equal(final, ref_final, f'final {indices}')
            assert len(inter) == len(ref_inter)
            for a, b in zip(inter, ref_inter):
                assert_equal(a, b, f'intermediate {indices}')
            if indices is None:
                levels = inter
        for i in (1, 2):
            early = model.forward_intermediates(x, indices=(i,), stop_early=True, intermediates_only=True)
            assert len(early) == 1
            assert_equal(early[0], levels[i], f'stop_early at level {i}')
    _check_channels_last_intermediates(model, ref, x, levels)
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[n])
    for last in range(1, n - 1):
        pruned, ref_pruned = copy.deepcopy(model), copy.deepcopy(ref)
        assert pruned.prune_intermediate_layers((0, last)) == ref_pruned.prune_intermediate_layers((0, last)) \
            == [0, last]
        assert list(pruned.state_dict()) == list(ref_pruned.state_dict())
        assert (pruned.num_features, pruned.head_hidden_size, pruned.num_classes) == \
            (ref_pruned.num_features, ref_pruned.head_hidden_size, ref_pruned.num_classes)
        with torch.no_grad():
            assert_equal(pruned(x), ref_pruned(x), f'pruned to (0, {last})')
        pruned.reset_classifier(7, 'avg')
        with torch.no_grad():
            assert pruned(x).shape == (1, 7)


def _check_channels_last_intermediates(model, ref, x: torch.Tensor, levels) -> None:
    """output_fmt='NHWC': timm's levels where timm gives them (Swin); where timm refuses (CNNs, by an assert),
    featzoo refuses by ValueError or gives its NCHW levels channels-last."""
    with torch.no_grad():
        try:
            expected = ref.forward_intermediates(x, output_fmt='NHWC', intermediates_only=True)
        except Exception:  # noqa: BLE001 - timm's refusal
            expected = None
        try:
            got = model.forward_intermediates(x, output_fmt='NHWC', intermediates_only=True)
        except ValueError as error:
            assert expected is None and 'NHWC' in str(error), error
            return
    if expected is None:
        expected = [level.permute(0, 2, 3, 1) for level in levels]
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_equal(a, b, f'NHWC intermediate {i}')


@pytest.mark.parametrize('name', _contract_rows())
def test_model_contract_is_timms(name):
    """forward_features, forward_head, num_classes / num_features / head_hidden_size, the classifier and what
    reset_classifier makes of them are timm's, but for the arguments featzoo refuses (RESET_REFUSED, and whatever
    timm refuses too)."""
    side = input_side_for(name)
    ref, model = _timm_pair(name, side)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feat = model.forward_features(x)
        assert_equal(feat, ref.forward_features(x), 'forward_features')
        assert_equal(model.forward_head(feat, pre_logits=True), ref.forward_head(feat, pre_logits=True),
                     'pre_logits')
    _same_head(model, ref, x, 'as built')
    refused = {**RESET_REFUSED_BY_ALL, **RESET_REFUSED.get(_family(name), {})}
    for args in RESET_ARGS + [args for args in refused if args not in RESET_ARGS]:
        if args in refused:
            with pytest.raises(ValueError, match=refused[args]):
                model.reset_classifier(*args)
            continue
        before = copy.deepcopy(ref)
        try:
            ref.reset_classifier(*args)
        except Exception:  # noqa: BLE001 - what timm refuses (often by an assert), featzoo refuses by ValueError
            ref = before
            with pytest.raises(ValueError):
                model.reset_classifier(*args)
            continue
        model.reset_classifier(*args)
        model.load_state_dict(ref.state_dict())  # the same new classifier (and nothing else new)
        _same_head(model, ref, x, f'reset_classifier{args}')
    assert model.no_weight_decay() == (ref.no_weight_decay() if hasattr(ref, 'no_weight_decay') else set())


def _same_head(model: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, what: str) -> None:
    def head(m):
        clf = m.get_classifier()
        return (m.num_classes, m.num_features, m.head_hidden_size, type(clf).__name__,
                getattr(clf, 'in_features', None), getattr(clf, 'out_features', None))
    assert head(model) == head(ref), what
    with torch.no_grad():
        assert_equal(model(x), ref(x), what)


# ---- output strides and feature levels -----------------------------------------------------------------------------

@pytest.mark.parametrize('name', _rows(_structure_rows(), STRUCTURE_DEFAULT))
def test_output_stride_keeps_parameters_and_levels(name):
    """Dilated models hold exactly the stride-32 parameters; their levels tap the same modules with the same widths at
    reductions capped by the output stride, as the index records; the levels and forward_features have the shapes
    those reductions imply. Built on the meta device and given uninitialized storage: shapes need no initialization
    (the slow part for the big variants). Stride 32 is checked by the parity test. STRUCTURE_DEFAULT by default."""
    natural = _index_levels(name, _natural(name))
    side = input_side_for(name, SIDE)
    kwargs = size_kwargs(name, side)
    x = torch.zeros(1, 3, side, side)
    with meta_device():
        ref = _shapes(featzoo.create_model(name, **kwargs))
    for stride in _dilated(name):
        expected = [dict(level, reduction=min(level['reduction'], stride)) for level in natural]
        assert _index_levels(name, stride) == expected, f'the index at output_stride={stride}'
        with meta_device():
            model = featzoo.create_model(name, output_stride=stride, **kwargs)
        assert _shapes(model) == ref, f'{name} output_stride={stride} changed the parameters'
        assert _levels(model.feature_info) == expected
        final, levels = _forward_levels(model.to_empty(device='cpu').eval(), x)
        assert [tuple(t.shape) for t in levels] == [(1, d['num_chs'], side // d['reduction'], side // d['reduction'])
                                                    for d in expected], f'{name} output_stride={stride}'
        assert final.shape[-2:] == (side // stride, side // stride), f'{name} output_stride={stride}'


def _forward_levels(model: torch.nn.Module, x: torch.Tensor):
    """forward_features, and the outputs of the modules the feature levels tap."""
    captured = {}
    handles = [model.get_submodule(d['module']).register_forward_hook(
        lambda mod, args, out, key=d['module']: captured.__setitem__(key, out)) for d in model.feature_info]
    try:
        with torch.no_grad():
            final = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    return final, [captured[d['module']] for d in model.feature_info]


# ---- feature wrappers --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def default_wrapper():
    """(name, output_stride) -> (checkpoint, input, the default wrapper's outputs, levels and state keys): one random
    checkpoint per model, shared by every output stride."""
    files, outputs = {}, {}
    # a folder of its own: save_state's default folders go when the test that saved them ends
    folder = tempfile.mkdtemp(prefix='featzoo-test-')

    def get(name, stride):
        if name not in files:
            with meta_device():
                model = featzoo.create_model(name, **_size_kwargs(name))
            model = model.to_empty(device='cpu')
            randomize_state(model)
            os.makedirs(os.path.join(folder, name))
            files[name] = save_state(model.state_dict(), os.path.join(folder, name))
        if (name, stride) not in outputs:
            side = input_side_for(name)
            x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
            ref = featzoo.create_model(name, features_only=True, checkpoint_path=files[name],
                                       **_wrapper_kwargs(name, stride)).eval()
            outputs[name, stride] = x, check_feature_shapes(ref, x), _levels(ref.feature_info), list(ref.state_dict())
        return (files[name],) + outputs[name, stride]

    yield get
    shutil.rmtree(folder, ignore_errors=True)


def _size_kwargs(name: str) -> dict:
    return size_kwargs(name, input_side_for(name))


def _wrapper_kwargs(name: str, stride: int) -> dict:
    """Every level, at the given output stride, for the input side of the test."""
    kwargs = dict(out_indices=tuple(range(len(_index_levels(name, stride)))), **_size_kwargs(name))
    return kwargs if stride == _natural(name) else dict(kwargs, output_stride=stride)


def _head_keys(name: str, keys) -> list:
    """The keys of the classifier (and of the head modules HEAD_MODULES names for the family) among ``keys``."""
    cfg = dict(registry.get_family_header(_family(name)).get('default_cfg', {}))
    cfg.update(featzoo.get_pretrained_cfg(name) or {})
    classifier = cfg['classifier']
    head = HEAD_MODULES.get(_family(name), ()) + ((classifier,) if isinstance(classifier, str) else tuple(classifier))
    return [k for k in keys if any(k == h or k.startswith(h + '.') for h in head)]


@pytest.mark.parametrize('name,output_stride,feature_cls', _rows(_wrapper_rows(), ids=lambda r: f'{_row_id(r)}-{r[2]}'))
def test_every_declared_wrapper_matches_the_default(name, output_stride, feature_cls, default_wrapper):
    path, x, expected, levels, keys = default_wrapper(name, output_stride)
    assert levels == _index_levels(name, output_stride)
    model = featzoo.create_model(name, features_only=True, feature_cls=feature_cls, checkpoint_path=path,
                                 **_wrapper_kwargs(name, output_stride)).eval()
    assert _levels(model.feature_info) == levels
    # features-only models drop the head (which would be unused parameters under DDP)
    assert _head_keys(name, keys) == _head_keys(name, model.state_dict()) == []
    got = check_feature_shapes(model, x)
    assert len(got) == len(expected) == len(levels)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_equal(a, b, f'{name} os{output_stride} {feature_cls} level {i}')
