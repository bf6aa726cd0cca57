"""Checkpoint files: formats, nesting, prefixes, adaptation, and every way a file can be wrong."""
from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch
from torch import nn
from safetensors.torch import save_file

import featzoo
from featzoo.weights.loading import adapt_input_conv, read_state_dict
from helpers import assert_equal

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def saved(weights_file):
    path, model = weights_file('resnet18')
    with torch.no_grad():
        ref = model(X)
    return path, model, ref


def test_safetensors_checkpoint_path(saved):
    path, _, ref = saved
    m = featzoo.create_model('resnet18', checkpoint_path=path).eval()
    assert_equal(m(X), ref, 'safetensors')
    m = featzoo.create_model('resnet18', pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    assert_equal(m(X), ref, 'pretrained file')


@pytest.mark.parametrize('layout', ['flat', 'state_dict', 'model', 'ddp'])
def test_pickle_layouts(saved, tmp_path, layout):
    path, model, ref = saved
    state = model.state_dict()
    obj = {
        'flat': state,
        'state_dict': {'state_dict': state, 'epoch': 3},
        'model': {'model': state, 'optimizer': {}},
        'ddp': {f'module.{k}': v for k, v in state.items()},
    }[layout]
    file = tmp_path / 'w.pth'
    torch.save(obj, file)
    m = featzoo.create_model('resnet18', checkpoint_path=str(file)).eval()
    assert_equal(m(X), ref, layout)


def test_meta_load_equals_slow_path(saved):
    """Building on the meta device and assigning gives exactly the weights of build-then-copy."""
    path, model, _ = saved
    fast = featzoo.create_model('resnet18', checkpoint_path=path)
    slow = featzoo.create_model('resnet18')
    slow.load_state_dict(read_state_dict(path))
    for (k, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(t.is_meta for t in list(fast.parameters()) + list(fast.buffers()))


def test_meta_skeleton_skips_meta_fills_only(monkeypatch):
    """Inside meta_skeleton, modules come out on meta without their init having run; real tensors made there are
    still filled."""
    from featzoo.weights.loading import meta_skeleton
    with monkeypatch.context() as patch:  # a meta fill that ran would end here
        patch.setattr(torch.Tensor, 'uniform_', lambda *a, **k: (_ for _ in ()).throw(AssertionError('filled')))
        with meta_skeleton():
            skeleton = nn.Conv2d(3, 8, 3)
    with meta_skeleton():
        real = torch.empty(4, device='cpu').fill_(2.0)
        initialized = nn.init.ones_(torch.empty(4, device='cpu'))
    assert skeleton.weight.is_meta and skeleton.bias.is_meta
    assert torch.equal(real, torch.full((4,), 2.0)) and torch.equal(initialized, torch.ones(4))


def test_meta_skeleton_stays_on_its_own_thread():
    """A thread building while another is inside meta_skeleton gets real, properly initialized weights."""
    import threading
    from featzoo.weights.loading import meta_skeleton
    started, finish = threading.Event(), threading.Event()
    built = {}

    def outside():
        started.wait(10)
        torch.manual_seed(0)
        built['conv'] = nn.Conv2d(3, 8, 3)
        finish.set()

    worker = threading.Thread(target=outside)
    worker.start()
    with meta_skeleton():
        nn.Conv2d(3, 8, 3)
        started.set()
        assert finish.wait(10)
    worker.join()
    torch.manual_seed(0)
    assert not built['conv'].weight.is_meta
    assert torch.equal(built['conv'].weight, nn.Conv2d(3, 8, 3).weight)


def test_features_only_skips_head_quietly(saved):
    path, model, _ = saved
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        m = featzoo.create_model('resnet18', features_only=True, out_indices=(1, 2), checkpoint_path=path).eval()
    ref = featzoo.create_model('resnet18', features_only=True, out_indices=(1, 2)).eval()
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if k in ref.state_dict()})
    for a, b in zip(m(X), ref(X)):
        assert_equal(a, b, 'features')


def test_num_classes_gets_fresh_head(saved):
    path, model, _ = saved
    m = featzoo.create_model('resnet18', num_classes=7, checkpoint_path=path).eval()
    assert m.fc.weight.shape == (7, 512) and not m.fc.weight.is_meta
    assert torch.equal(m.conv1.weight, model.conv1.weight)
    m0 = featzoo.create_model('resnet18', num_classes=0, checkpoint_path=path).eval()
    assert_equal(m0(X), model.forward_head(model.forward_features(X), pre_logits=True), 'pooled')


@pytest.mark.parametrize('in_chans', [1, 2, 5])
def test_in_chans_adapts_first_conv(saved, in_chans):
    path, model, _ = saved
    m = featzoo.create_model('resnet18', in_chans=in_chans, checkpoint_path=path)
    w = model.conv1.weight
    assert m.conv1.weight.shape == (64, in_chans, 7, 7)
    if in_chans == 1:
        assert_equal(m.conv1.weight, w.sum(1, keepdim=True), 'sum over RGB')
    else:
        expected = w.repeat(1, -(-in_chans // 3), 1, 1)[:, :in_chans] * (3 / in_chans)
        assert_equal(m.conv1.weight, expected, 'repeat and rescale')
    assert m(torch.randn(1, in_chans, 64, 64)).shape == (1, 1000)


def test_adapt_input_conv_identity():
    w = torch.randn(4, 3, 3, 3)
    assert torch.equal(adapt_input_conv(3, w), w)


def test_half_precision_checkpoint_loads_as_float(tmp_path, saved):
    _, model, ref = saved
    file = tmp_path / 'half.safetensors'
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, str(file))
    m = featzoo.create_model('resnet18', checkpoint_path=str(file)).eval()
    assert m.conv1.weight.dtype == torch.float32
    # the loaded model holds exactly the file's values: the float32 model with its weights rounded to float16
    rounded = featzoo.create_model('resnet18').eval()
    rounded.load_state_dict({k: (v.half().float() if v.is_floating_point() else v)
                             for k, v in model.state_dict().items()})
    for key, value in rounded.state_dict().items():
        assert torch.equal(m.state_dict()[key], value), key
    with torch.no_grad():
        assert_equal(m(X), rounded(X), 'half')


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        featzoo.create_model('resnet18', checkpoint_path=str(tmp_path / 'nope.safetensors'))
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        featzoo.create_model('resnet18', checkpoint_path=str(tmp_path))


@pytest.mark.parametrize('chunk', [1000, 4096 * 3 + 5])
def test_short_reads_and_gaps_still_give_every_byte(saved, monkeypatch, chunk):
    """The kernel may return fewer bytes than a scattering read asked for; reading resumes inside the tensor it
    stopped in. Subsets of keys leave gaps in the file that split the reads."""
    from featzoo.weights import loading
    path, model, _ = saved
    real_preadv = os.preadv
    calls = []

    def short_preadv(fd, buffers, offset):
        calls.append(len(buffers))
        budget, parts = chunk, []
        for view in buffers:
            if budget <= 0:
                break
            parts.append(view[:budget])
            budget -= len(parts[-1])
        return real_preadv(fd, parts, offset)

    monkeypatch.setattr(loading.os, 'preadv', short_preadv)
    expected = model.state_dict()
    every = read_state_dict(path)
    assert every.keys() == expected.keys() and all(torch.equal(every[k], expected[k]) for k in expected)
    assert max(calls) > 1  # several tensors per call
    subset = [k for i, k in enumerate(expected) if i % 3 == 0]
    some = read_state_dict(path, subset)
    assert list(some) == subset and all(torch.equal(some[k], expected[k]) for k in subset)


@pytest.mark.parametrize('fmt', ['safetensors', 'pickle'])
def test_background_read_equals_direct_read(saved, tmp_path, fmt):
    """The read that runs while the model is built gives the same tensors, in aligned memory of their own."""
    from featzoo.weights.loading import BackgroundRead
    path, model, _ = saved
    if fmt == 'pickle':
        path = str(tmp_path / 'w.pth')
        torch.save(model.state_dict(), path)
    pending = BackgroundRead(path)
    got, expected = pending.result(), model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    if fmt == 'safetensors':
        assert all(t.data_ptr() % 64 == 0 for t in got.values())
        assert len({t.untyped_storage().data_ptr() for t in got.values()}) == len(got)  # saveable one by one
    assert pending.result() is got


def test_background_read_closes_its_file_without_a_caller(saved):
    """A read whose result nobody takes (the build failed meanwhile) still closes the file when it ends."""
    from featzoo.weights.loading import BackgroundRead
    pending = BackgroundRead(saved[0])
    for thread in pending._threads:
        thread.join()
    assert pending._plan is not None and pending._plan.file.closed


def test_read_without_preadv(saved, monkeypatch):
    """Platforms without os.preadv (Windows) read with seek and readinto, one thread."""
    from featzoo.weights import loading
    path, model, _ = saved
    monkeypatch.delattr(loading.os, 'preadv')
    expected = model.state_dict()
    subset = [k for i, k in enumerate(expected) if i % 2 == 0]
    for keys in (None, subset):
        got = read_state_dict(path, keys)
        assert set(got) == set(keys or expected) and all(torch.equal(got[k], expected[k]) for k in got)


def test_background_read_raises_on_the_callers_thread(saved, tmp_path, monkeypatch):
    from featzoo.weights import loading
    path, model, _ = saved
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(open(path, 'rb').read()[:-1000])
    pending = loading.BackgroundRead(str(truncated))  # the header's check fails while planning
    with pytest.raises(RuntimeError, match='truncated.safetensors.*corrupt or truncated.*layer4'):
        pending.result()

    def ends_early(fd, buffers, offset):  # the file shrinks after its header was read
        return 0

    with monkeypatch.context() as patch:
        patch.setattr(loading.os, 'preadv', ends_early)
        pending = loading.BackgroundRead(path)
        with pytest.raises(RuntimeError, match='ended inside a tensor'):
            pending.result()
    with pytest.raises(FileNotFoundError, match='nowhere'):
        loading.BackgroundRead(str(tmp_path / 'nowhere.safetensors'))
    with pytest.raises(ValueError, match='not the checkpoint to load'):
        loading.load_weights(model, str(truncated), prefetched=loading.BackgroundRead(path))


def test_direct_assignment_equals_load_state_dict(saved):
    """The quick assignment leaves the model exactly as load_state_dict(assign=True) does, and steps aside for
    modules that load their own way."""
    from featzoo.layers.norm import FrozenBatchNorm2d
    from featzoo.weights import loading
    path, _, _ = saved
    state = read_state_dict(path)
    with loading.meta_skeleton():
        quick, stock = featzoo.create_model('resnet18'), featzoo.create_model('resnet18')
    quick.layer1[0].conv1.weight.requires_grad_(False)
    stock.layer1[0].conv1.weight.requires_grad_(False)
    assert loading._assign_checked(quick, dict(state))
    stock.load_state_dict(dict(state), strict=False, assign=True)
    for (name, a), (_, b) in zip(quick.named_parameters(), stock.named_parameters()):
        assert type(a) is type(b) and a.requires_grad == b.requires_grad and a.data_ptr() == b.data_ptr(), name
    for (name, a), (_, b) in zip(quick.named_buffers(), stock.named_buffers()):
        assert a.data_ptr() == b.data_ptr(), name

    with loading.meta_skeleton():
        custom = featzoo.create_model('resnet18')
    custom.bn1 = FrozenBatchNorm2d(64).to('meta')  # loads through its own _load_from_state_dict
    assert not loading._assign_checked(custom, dict(state))
    assert custom.conv1.weight.is_meta  # nothing was assigned
    with loading.meta_skeleton():
        hooked = featzoo.create_model('resnet18')
    hooked.fc.register_load_state_dict_post_hook(lambda module, keys: None)
    assert not loading._assign_checked(hooked, dict(state))


def test_corrupt_truncated_and_empty_files(tmp_path, saved):
    path, _, _ = saved
    data = open(path, 'rb').read()
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00not json at all!')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    broken_pickle = tmp_path / 'broken.pth'
    broken_pickle.write_bytes(b'PK\x03\x04 this is not a checkpoint')
    for bad in (truncated, garbage, empty, broken_pickle):
        with pytest.raises(RuntimeError, match=bad.name):
            featzoo.create_model('resnet18', checkpoint_path=str(bad))


def test_weights_of_another_architecture(tmp_path, weights_file):
    path, _ = weights_file('resnet50')
    with pytest.raises(RuntimeError, match='does not fit'):
        featzoo.create_model('resnet18', checkpoint_path=path)


def test_missing_keys_are_named(tmp_path, saved):
    _, model, _ = saved
    state = model.state_dict()
    del state['layer2.0.conv1.weight']
    file = tmp_path / 'partial.safetensors'
    save_file(state, str(file))
    with pytest.raises(RuntimeError, match='layer2.0.conv1.weight'):
        featzoo.create_model('resnet18', checkpoint_path=str(file))


class _Boom:
    def __reduce__(self):
        return (os.system, ('touch /tmp/featzoo-pwned-marker',))


def test_malicious_pickle_never_runs(tmp_path):
    marker = '/tmp/featzoo-pwned-marker'
    if os.path.exists(marker):
        os.remove(marker)
    file = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}, 'payload': _Boom()}, file)
    with pytest.raises(RuntimeError, match=r"evil.pth': it holds Python objects other than tensors"):
        featzoo.create_model('resnet18', checkpoint_path=str(file))
    assert not os.path.exists(marker)
    raw = tmp_path / 'raw.bin'
    raw.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(RuntimeError, match=r"raw.bin': it is neither a safetensors file nor a checkpoint"):
        featzoo.create_model('resnet18', checkpoint_path=str(raw))
    assert not os.path.exists(marker)


def test_random_bytes_are_called_unreadable_not_unsafe(tmp_path):
    # the safe unpickler rejects unknown opcodes the same way it rejects objects; the message must tell them apart
    file = tmp_path / 'noise.pth'
    file.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RuntimeError, match=r"noise.pth': it is neither a safetensors file .*Unsupported operand") as err:
        featzoo.create_model('resnet18', checkpoint_path=str(file))
    assert 'Python objects' not in str(err.value) and 'weights_only` set to `False`' not in str(err.value)


def test_pretrained_without_published_weights_explains(monkeypatch):
    from featzoo import registry
    entry = dict(registry.get_arch_entry('resnet18'), pretrained=[])
    monkeypatch.setitem(registry._load_index(), 'resnet18', entry)
    with pytest.raises(ValueError, match='checkpoint_path'):
        featzoo.create_model('resnet18', pretrained=True)


def test_pretrained_and_checkpoint_conflict(saved):
    path, _, _ = saved
    with pytest.raises(ValueError, match='checkpoint_path'):
        featzoo.create_model('resnet18', pretrained=True, checkpoint_path=path)


def test_overlapping_tensors_are_refused_before_any_allocation(tmp_path, monkeypatch):
    """200 header entries that all claim the same 4 KiB (the library's 'invalid offset'): refused while checking
    the header, before a byte is allocated; the old reader allocated 200 times the data."""
    import json
    import struct
    from featzoo.weights import safetensors_reader
    entry = {'dtype': 'F32', 'shape': [1024], 'data_offsets': [0, 4096]}
    header = json.dumps({f'w{i}': entry for i in range(200)}).encode()
    path = tmp_path / 'aliases.safetensors'
    path.write_bytes(struct.pack('<Q', len(header)) + header + b'\0' * 4096)
    requested = []
    real_empty = torch.empty

    def counting_empty(*size, **kwargs):
        out = real_empty(*size, **kwargs)
        requested.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(safetensors_reader.torch, 'empty', counting_empty)
    with pytest.raises(RuntimeError, match=r"aliases.safetensors.*tensor 'w\d+' claims bytes 0..4096, but the "
                                           r"previous tensor ends at byte 4096"):
        read_state_dict(str(path))
    assert sum(requested) == 0
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="aliases.safetensors.*tensor 'w"):
        featzoo.create_model('resnet18', checkpoint_path=str(path))


def test_checkpoint_without_classifier_is_an_error_unless_a_fresh_head_is_wanted(saved, tmp_path, caplog):
    """A file that lacks exactly the classifier's keys would leave a random head: an error naming the keys and the
    fixes, unless the caller asks for a fresh head (allow_fresh_classifier), which the 'featzoo' logger reports."""
    import logging
    from featzoo.weights.loading import load_weights
    _, model, _ = saved
    headless = tmp_path / 'headless.safetensors'
    save_file({k: v for k, v in model.state_dict().items() if not k.startswith('fc.')}, str(headless))
    with pytest.raises(RuntimeError, match=r"headless.safetensors' has no classifier: it lacks 'fc.bias', "
                                           r"'fc.weight'.*num_classes=0.*features_only=True.*num_classes=N"):
        load_weights(featzoo.create_model('resnet18'), str(headless), classifier='fc')
    fresh = featzoo.create_model('resnet18')
    head = fresh.fc.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger='featzoo'):
        result = load_weights(fresh, str(headless), classifier='fc', allow_fresh_classifier=True)
    assert result['reinitialized'] == ['fc.bias', 'fc.weight']
    assert torch.equal(fresh.fc.weight, head) and torch.equal(fresh.conv1.weight, model.conv1.weight)
    assert any('no classifier' in r.getMessage() and 'fc' in r.getMessage() for r in caplog.records
               if r.name == 'featzoo')
    # any other missing key stays an error, fresh head or not
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith('fc.') and k != 'layer1.0.bn1.bias'}
    save_file(partial, str(tmp_path / 'partial.safetensors'))
    with pytest.raises(RuntimeError, match='layer1.0.bn1.bias'):
        load_weights(featzoo.create_model('resnet18'), str(tmp_path / 'partial.safetensors'), classifier='fc',
                     allow_fresh_classifier=True)
