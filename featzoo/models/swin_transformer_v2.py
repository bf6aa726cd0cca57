"""Swin Transformer V2 (Liu et al., 2022): Swin with scaled cosine attention, a continuous position bias produced by
a small MLP from log-spaced relative coordinates, and norms after (not before) each residual branch.

Parameter and buffer names follow timm's ``SwinTransformerV2``, so its checkpoints load unchanged (the original
Microsoft layout, with patch merging at the end of each stage, is converted by :func:`checkpoint_filter_fn`). The
windowing (partition, padding, cyclic shift and its mask) is Swin V1's, imported from ``swin_transformer``: any input
whose sides are multiples of the patch size runs, maps that do not tile into windows are padded, and the shift mask
is rebuilt for sizes other than the creation size, as timm's ``strict_img_size=False`` model does.

>>> m = SPEC.build('swinv2_tiny_window8_256', img_size=64, num_classes=0)
>>> m.forward_features(torch.randn(1, 3, 64, 64)).shape
torch.Size([1, 2, 2, 768])
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Any, Dict, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..family import FamilySpec
from ..layers import DropPath
from ..layers.mlp import Mlp
from ..layers.rel_pos import relative_position_index
from .swin_transformer import (Pair, PatchMerging, SwinTransformer, SwinTransformerBlock, _check_config, _on_meta,
                               _pair, _stage_window_sizes, block_window_and_shift, input_multiple)

OUTPUT_STRIDES = (32,)
DEFAULT_CFG = dict(
    input_size=(3, 256, 256), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj', classifier='head.fc')

_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
# fine-tuned at a larger window than pre-trained: the coordinates stay normalized by the pre-training windows
_FT = dict(pretrained_window_sizes=(12, 12, 12, 6))

VARIANTS: Dict[str, Dict[str, Any]] = {
    'swinv2_tiny_window8_256': dict(img_size=256, window_size=8, **_T),
    'swinv2_tiny_window16_256': dict(img_size=256, window_size=16, **_T),
    'swinv2_small_window8_256': dict(img_size=256, window_size=8, **_S),
    'swinv2_small_window16_256': dict(img_size=256, window_size=16, **_S),
    'swinv2_base_window8_256': dict(img_size=256, window_size=8, **_B),
    'swinv2_base_window16_256': dict(img_size=256, window_size=16, **_B),
    'swinv2_base_window12_192': dict(img_size=192, window_size=12, **_B),
    'swinv2_base_window12to16_192to256': dict(img_size=256, window_size=16, **_B, **_FT),
    'swinv2_base_window12to24_192to384': dict(img_size=384, window_size=24, **_B, **_FT),
    'swinv2_large_window12_192': dict(img_size=192, window_size=12, **_L),
    'swinv2_large_window12to16_192to256': dict(img_size=256, window_size=16, **_L, **_FT),
    'swinv2_large_window12to24_192to384': dict(img_size=384, window_size=24, **_L, **_FT),
}

_MAX_LOGIT_SCALE = math.log(1.0 / 0.01)


def log_spaced_coords(window: Pair, pretrained_window: Pair = (0, 0),
                      device: Optional[torch.device] = None) -> torch.Tensor:
    """Relative offsets of a window, ``(1, 2h-1, 2w-1, 2)``: normalized to [-8, 8] by the pre-training window (the
    window itself when that is 0), then compressed as ``sign(d) * log2(1 + |d|) / 3``.

    >>> log_spaced_coords((2, 2))[0, :, 0, 0]  # offsets -1, 0, 1 of a 2-window: -log2(9) / 3, 0, log2(9) / 3
    tensor([-1.0566,  0.0000,  1.0566])
    """
    if _on_meta(device):
        return torch.empty(1, 2 * window[0] - 1, 2 * window[1] - 1, 2, device='meta')
    reference = pretrained_window if pretrained_window[0] > 0 else window
    axes = [torch.arange(1 - size, size, device=device, dtype=torch.float32) / max(ref - 1, 1)
            for size, ref in zip(window, reference)]
    coords = torch.stack(torch.meshgrid(axes[0], axes[1], indexing='ij'), dim=-1).unsqueeze(0) * 8
    return torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)


class WindowAttentionV2(nn.Module):
    """Cosine attention inside a window: unit-length queries and keys, a learned per-head temperature (capped at
    100), and a bias of ``16 * sigmoid(cpb_mlp(coords))`` per relative offset.

    >>> WindowAttentionV2(32, 2, (4, 4))(torch.zeros(3, 16, 32)).shape
    torch.Size([3, 16, 32])
    """

    def __init__(self, dim: int, num_heads: int, window_size: Pair, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, pretrained_window_size: Pair = (0, 0)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.pretrained_window_size = pretrained_window_size
        self.attn_drop = attn_drop
        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.empty(dim))
            self.register_buffer('k_bias', torch.zeros(dim), persistent=False)  # keys take no bias
            self.v_bias = nn.Parameter(torch.empty(dim))
        else:
            self.q_bias = self.v_bias = self.k_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer('relative_coords_table', log_spaced_coords(window_size, pretrained_window_size),
                             persistent=False)
        self.register_buffer('relative_position_index', relative_position_index(window_size), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Temperature 10 and zero q/v biases (training from scratch)."""
        nn.init.constant_(self.logit_scale, math.log(10.0))
        if self.q_bias is not None:
            nn.init.zeros_(self.q_bias)
            nn.init.zeros_(self.v_bias)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the coordinates, the index and the zero key bias (after building on the meta device)."""
        device = self.proj.weight.device
        self.relative_coords_table = log_spaced_coords(self.window_size, self.pretrained_window_size, device=device)
        self.relative_position_index = relative_position_index(self.window_size, device=device)
        if self.q_bias is not None:
            self.k_bias = torch.zeros_like(self.q_bias)

    def relative_position_bias(self) -> torch.Tensor:
        """The bias added to the attention logits, ``(heads, N, N)``, in ``(0, 16)``."""
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        return 16 * torch.sigmoid(table[self.relative_position_index].permute(2, 0, 1))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, _ = x.shape
        bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        scale = torch.clamp(self.logit_scale, max=_MAX_LOGIT_SCALE).exp()
        q = F.normalize(q, dim=-1) * scale
        k = F.normalize(k, dim=-1)
        attn_bias = self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            # image-major windows: the (window, head) bias tiles over the batch (a 4-D mask keeps SDPA fused)
            attn_bias = (attn_bias + mask.unsqueeze(1)).repeat(b // mask.shape[0], 1, 1, 1)
        drop = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=drop, scale=1.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, -1)))


class SwinTransformerV2Block(SwinTransformerBlock):
    """Swin V1's windowing with V2's attention, and each branch normed before it joins the residual.

    >>> SwinTransformerV2Block(32, (8, 8), 2, (4, 4), shift=True)(torch.zeros(1, 8, 8, 32)).shape
    torch.Size([1, 8, 8, 32])
    """

    def __init__(self, dim: int, input_resolution: Pair, num_heads: int, window_size: Pair, shift: bool = False,
                 always_partition: bool = False, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 pretrained_window_size: Pair = (0, 0)) -> None:
        nn.Module.__init__(self)
        self.input_resolution = input_resolution
        self.window_size, self.shift_size = block_window_and_shift(input_resolution, window_size, shift,
                                                                   always_partition)
        self.attn = WindowAttentionV2(dim, num_heads, self.window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                      proj_drop=proj_drop, pretrained_window_size=pretrained_window_size)
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mask_size: Pair = tuple(math.ceil(r / w) * w for r, w in zip(input_resolution, self.window_size))
        self.register_buffer('attn_mask', self._build_mask(None, None), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self._attention(x)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))


def _pretrained_windows(value: Any, num_stages: int) -> Tuple[Pair, ...]:
    """One pre-training window per stage; 0 (the default) normalizes coordinates by the stage's own window."""
    if not isinstance(value, (list, tuple)) or len(value) != num_stages:
        raise ValueError(f'pretrained_window_sizes must give one window per stage ({num_stages} stages; 0 = the '
                         f'stage window), got {value!r}')
    out = []
    for i, v in enumerate(value):
        if isinstance(v, int) and not isinstance(v, bool) and v == 0:
            out.append((0, 0))
        else:
            out.append(_pair(v, f'pretrained_window_sizes[{i}]'))
    return tuple(out)


class SwinTransformerV2(SwinTransformer):
    """Swin Transformer V2: patch embedding, four stages of cosine window attention, final norm and classifier.

    ``forward_features`` returns the normed NHWC map; the feature, head and intermediate methods are Swin V1's.

    >>> m = SwinTransformerV2(img_size=64, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))
    >>> m(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1000])
    """

    def __init__(self, img_size: Union[int, Pair] = 224, patch_size: Union[int, Pair] = 4, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: Any = 7, always_partition: bool = False, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 pretrained_window_sizes: Optional[Sequence[Any]] = None) -> None:
        nn.Module.__init__(self)
        img_size = _pair(img_size, 'img_size')
        patch_size = _pair(patch_size, 'patch_size')
        _check_config(img_size, patch_size, in_chans, num_classes, global_pool, embed_dim, depths, num_heads,
                      None, mlp_ratio)
        pretrained = _pretrained_windows(
            (0,) * len(depths) if pretrained_window_sizes is None else pretrained_window_sizes, len(depths))
        block_args = dict(block_layer=SwinTransformerV2Block, merge_layer=partial(PatchMerging, norm_last=True),
                          always_partition=always_partition, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                          proj_drop=proj_drop_rate, attn_drop=attn_drop_rate)
        self._build(img_size, patch_size, in_chans, num_classes, global_pool, embed_dim, depths, num_heads,
                    _stage_window_sizes(window_size, len(depths)), drop_rate, drop_path_rate,
                    [dict(block_args, pretrained_window_size=p) for p in pretrained])

    def _init_weights(self) -> None:
        super()._init_weights()
        for stage in self.layers:
            for block in stage.blocks:  # residual post-norms start at zero: every block starts as the identity
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def no_weight_decay(self) -> Set[str]:
        """The position-bias MLPs and the attention temperatures are exempt from weight decay.

        >>> sorted(SwinTransformerV2(depths=(1,), num_heads=(3,)).no_weight_decay())[:2]
        ['layers.0.blocks.0.attn.cpb_mlp.0.bias', 'layers.0.blocks.0.attn.cpb_mlp.0.weight']
        """
        return {n for n, _ in self.named_parameters() if 'cpb_mlp' in n or 'logit_scale' in n}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's regexes)."""
        return dict(super().group_matcher(coarse), stem=r'^absolute_pos_embed|patch_embed')


_BUFFERS = ('relative_position_index', 'relative_coords_table', 'attn_mask')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Fit a Swin V2 checkpoint to ``model``: drop computed buffers, and convert the original (Microsoft) layout,
    whose stage ``i`` ends with the patch merging that timm puts at the start of stage ``i + 1`` and whose
    classifier is ``head`` rather than ``head.fc``.

    >>> sd = {'layers.0.downsample.norm.weight': torch.ones(192), 'head.weight': torch.zeros(10, 768),
    ...       'layers.0.blocks.0.attn.relative_coords_table': torch.zeros(1)}
    >>> sorted(checkpoint_filter_fn(sd, None))
    ['head.fc.weight', 'layers.1.downsample.norm.weight']
    """
    state_dict = state_dict.get('model', state_dict)
    original = any(k.startswith('layers.0.downsample.') for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.rsplit('.', 1)[-1] in _BUFFERS:
            continue
        if original:
            key = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) + 1}.downsample.', key)
            if key.startswith('head.') and not key.startswith('head.fc.'):
                key = 'head.fc.' + key[len('head.'):]
        out[key] = value
    return out


SPEC = FamilySpec(
    name='swin_transformer_v2', model=SwinTransformerV2, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter', 'fx'), default_feature_cls='getter', output_strides=OUTPUT_STRIDES,
    input_multiple=input_multiple, img_size_arg='img_size',
    export=('torch.export', 'onnx', 'compile'),  # no dynamic_hw, as Swin V1: symbolic window padding traces slowly
    checkpoint_filter=checkpoint_filter_fn)
