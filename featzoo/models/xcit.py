"""XCiT (El-Nouby et al., 2021): cross-covariance attention (heads attend across channels, so the cost grows
linearly with the number of tokens), a local patch interaction (two depthwise 3x3 convolutions) in every block, a
convolutional patch embedding, a Fourier position encoding, and CaiT's class-attention blocks at the end.

Parameter names follow timm's ``Xcit``. Nothing depends on the input size the model was built for: the position
encoding is computed for the grid each input gives, so any input whose sides are multiples of the patch (8 or 16)
works and computes what timm's model computes at that size.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice
from ..family import FamilySpec
from ..features.notrace import register_notrace_function
from ..layers.activations import create_act_layer
from ..layers.class_attention import ClassTokenLastApi, XcitClassAttentionBlock, check_class_token_pool
from ..layers.drop import DropPath
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp
from ..layers.pyramid import token_pyramid
from ..layers.token_model import AttentionParts, check_heads, check_img_size, check_single_stride
from ..layers.token_model import check_token_model_args, layer_norm_eps6, SQUARE_PATCH_SPEC
from ..layers.token_model import reset_linear_head, run_checkpointed
from ..layers.weight_init import trunc_normal_, trunc_normal_linears_

__all__ = ['Xcit', 'CrossCovarianceAttention', 'XcaBlock', 'VARIANTS', 'SPEC']

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=1.0, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj.0.0', classifier='head')

GLOBAL_POOLS = ('', 'token', 'avg')
PATCH_SIZES = (8, 16)


@register_notrace_function
def fourier_position_features(height: int, width: int, hidden_dim: int, temperature: float,
                              device: torch.device) -> torch.Tensor:
    """Sine/cosine features of the normalized row and column of every grid cell, (1, 2 * hidden_dim, H, W): row
    features first, each half alternating sin and cos over geometrically spaced frequencies.

    Kept out of FX graphs: the grid size it is built for would otherwise be frozen into them.

    >>> fourier_position_features(2, 3, 4, 10000.0, torch.device('cpu')).shape
    torch.Size([1, 8, 2, 3])
    """
    eps = 1e-6
    rows = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    cols = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    # positions in (0, 2 pi], the last row / column at (almost) 2 pi
    rows = rows / (rows[-1:] + eps) * (2 * math.pi)
    cols = cols / (cols[-1:] + eps) * (2 * math.pi)
    steps = torch.arange(hidden_dim, device=device, dtype=torch.float32)
    freqs = temperature ** (2 * torch.div(steps, 2, rounding_mode='floor') / hidden_dim)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] / freqs  # (L, hidden_dim)
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)

    row_feats = encode(rows)[:, None, :].expand(height, width, hidden_dim)
    col_feats = encode(cols)[None, :, :].expand(height, width, hidden_dim)
    return torch.cat((row_feats, col_feats), dim=-1).permute(2, 0, 1).unsqueeze(0)


class FourierPositionEncoding(nn.Module):
    """Fourier features of the patch grid projected to the embedding width by a 1x1 convolution
    (``token_projection``); returns tokens (1, H * W, dim) to add to the patch tokens.

    >>> FourierPositionEncoding(hidden_dim=8, dim=16)(3, 4).shape
    torch.Size([1, 12, 16])
    """

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000.0) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.hidden_dim = hidden_dim
        self.temperature = temperature

    def forward(self, height: int, width: int) -> torch.Tensor:
        weight = self.token_projection.weight
        feats = fourier_position_features(height, width, self.hidden_dim, self.temperature, weight.device)
        return self.token_projection(feats.to(weight.dtype)).flatten(2).transpose(1, 2)


def _conv_bn(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_chs))


class ConvPatchEmbed(nn.Module):
    """Patch embedding by stride-2 3x3 convolutions with batch norm and GELU between them: four (widths
    dim/8 .. dim) for 16-pixel patches, three (dim/4 .. dim) for 8-pixel ones. Returns an NCHW map.

    >>> ConvPatchEmbed(patch_size=8, embed_dim=32)(torch.ones(1, 3, 32, 48)).shape
    torch.Size([1, 32, 4, 6])
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768) -> None:
        super().__init__()
        check_choice('patch_size', patch_size, PATCH_SIZES)
        steps = int(math.log2(patch_size))
        widths = [embed_dim // 2 ** (steps - 1 - i) for i in range(steps)]
        layers: List[nn.Module] = []
        prev = in_chans
        for i, width in enumerate(widths):
            if i:
                layers.append(create_act_layer('gelu'))
            layers.append(_conv_bn(prev, width))
            prev = width
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.num_patches = (self.img_size[0] // patch_size) * (self.img_size[1] // patch_size)
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LocalPatchInteraction(nn.Module):
    """Tokens (B, H * W, C) back on their grid through depthwise 3x3 convolution, GELU, batch norm, depthwise 3x3
    convolution (``conv1``, ``act``, ``bn``, ``conv2``): the only exchange between neighbouring patches.

    >>> LocalPatchInteraction(8)(torch.ones(2, 6, 8), 2, 3).shape
    torch.Size([2, 6, 8])
    """

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.act = create_act_layer('gelu')
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, height, width)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.reshape(B, C, N).transpose(1, 2)


class CrossCovarianceAttention(AttentionParts):
    """Attention between channels: per head, L2-normalized queries and keys along the tokens give a (d, d)
    channel-affinity map (scaled by a learned ``temperature`` per head) that mixes the value channels.

    >>> CrossCovarianceAttention(32, num_heads=4)(torch.randn(2, 7, 32)).shape
    torch.Size([2, 7, 32])
    """

    def _input_projections(self, dim: int, qkv_bias: bool) -> None:
        self.temperature = nn.Parameter(torch.ones(self.num_heads, 1, 1))
        super()._input_projections(dim, qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # (3, B, heads, head_dim, N): channels play the part tokens play in ordinary attention
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).permute(0, 3, 1, 2).reshape(B, N, C)))


class XcaBlock(nn.Module):
    """``x + gamma1 * xca(norm1(x))``, ``x + gamma3 * lpi(norm3(x))``, ``x + gamma2 * mlp(norm2(x))``.

    >>> XcaBlock(16, 2)(torch.ones(1, 6, 16), 2, 3).shape
    torch.Size([1, 6, 16])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, eta: float = 1.0) -> None:
        super().__init__()
        self.norm1 = layer_norm_eps6(dim)
        self.attn = CrossCovarianceAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                             proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm3 = layer_norm_eps6(dim)
        self.local_mp = LocalPatchInteraction(dim)
        self.drop_path3 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = layer_norm_eps6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer='gelu', drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.eta = eta
        self.gamma1 = nn.Parameter(torch.full((dim,), float(eta)))
        self.gamma3 = nn.Parameter(torch.full((dim,), float(eta)))
        self.gamma2 = nn.Parameter(torch.full((dim,), float(eta)))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path1(self.gamma1 * self.attn(self.norm1(x)))
        x = x + self.drop_path3(self.gamma3 * self.local_mp(self.norm3(x), height, width))
        return x + self.drop_path2(self.gamma2 * self.mlp(self.norm2(x)))


class Xcit(ClassTokenLastApi, nn.Module):
    """XCiT: convolutional patch embedding, Fourier position encoding, ``depth`` XCA blocks, ``cls_attn_layers``
    class-attention blocks that bring in the class token, a final norm and a linear head.

    ``forward_features`` returns the class token followed by the patch tokens, as timm's does.

    The position encoding is computed for each input's grid (here 5 x 3 patches), so no size is built in:

    >>> m = Xcit(patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
    >>> m(torch.randn(1, 3, 40, 24)).shape, m.pos_embed(5, 3).shape
    (torch.Size([1, 10]), torch.Size([1, 15, 32]))
    """

    no_weight_decay_names = ('pos_embed.*', 'cls_token')
    class_blocks_name = 'cls_attn_blocks'

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'token', embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, cls_attn_layers: int = 2, use_pos_embed: bool = True,
                 eta: float = 1.0, tokens_norm: bool = False, output_stride: Optional[int] = None) -> None:
        super().__init__()
        check_token_model_args(global_pool, GLOBAL_POOLS, num_classes, in_chans, embed_dim, depth, num_heads,
                               (('cls_attn_layers', cls_attn_layers, 0),))
        check_choice('patch_size', patch_size, PATCH_SIZES)
        check_heads(embed_dim, num_heads)
        if embed_dim % 8:
            raise ValueError(f'embed_dim={embed_dim} must be a multiple of 8 (the patch embedding widens by halves '
                             f'from embed_dim / 8)')
        check_single_stride(output_stride, patch_size, 'XCiT')
        img_size = check_img_size(img_size, patch_size)

        self._set_token_model_attrs(num_classes, in_chans, global_pool, embed_dim, num_prefix_tokens=1)

        self.patch_embed = ConvPatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = FourierPositionEncoding(dim=embed_dim) if use_pos_embed else None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        # XCiT drops every block's path at the same rate
        self.blocks = nn.ModuleList([
            XcaBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                     attn_drop=attn_drop_rate, drop_path=drop_path_rate, eta=eta)
            for _ in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self._add_class_attention_head([
            XcitClassAttentionBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                    proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, norm_layer=layer_norm_eps6,
                                    eta=eta, tokens_norm=tokens_norm)
            for _ in range(cls_attn_layers)], num_classes, drop_rate)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize for training from scratch as timm does: truncated-normal linears and class token (skipped in
        effect on the meta device).

        >>> m = Xcit(patch_size=8, embed_dim=32, depth=1, num_heads=2); m.init_weights()
        >>> float(m.head.bias.detach().abs().max())
        0.0
        """
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_linears_(self)

    # ---- the model contract -----------------------------------------------------------------------------------

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into stem, blocks, and class-attention blocks with the final norm.

        >>> sorted(Xcit(patch_size=8, embed_dim=32, depth=1, num_heads=2).group_matcher())
        ['blocks', 'cls_attn_blocks', 'stem']
        """
        return dict(stem=r'^cls_token|pos_embed|patch_embed', blocks=r'^blocks\.(\d+)',
                    cls_attn_blocks=[(r'^cls_attn_blocks\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none), optionally changing the
        pooling ('token', 'avg' over the patch tokens, '' for none).

        >>> m = Xcit(patch_size=8, embed_dim=32, depth=1, num_heads=2); m.reset_classifier(0, 'avg')
        >>> m.head, m.global_pool
        (Identity(), 'avg')
        """
        like = self.patch_embed.proj[0][0].weight  # every model keeps it, pruned or not
        reset_linear_head(self, num_classes, global_pool, GLOBAL_POOLS, self.num_features, like,
                          partial(check_class_token_pool, self))

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Record ``img_size`` as the reference size. Nothing else changes: the position encoding follows every
        input's grid. Its sides must be multiples of the patch.

        >>> m = Xcit(patch_size=8, embed_dim=32, depth=1, num_heads=2); m.set_input_size((64, 48))
        >>> m.patch_embed.img_size, m.patch_embed.num_patches
        ((64, 48), 48)
        """
        size = check_img_size(img_size, self.patch_embed.patch_size)
        self.patch_embed.img_size = size
        self.patch_embed.num_patches = (size[0] // self.patch_embed.patch_size) * (size[1] // self.patch_embed.patch_size)

    # ---- forward ----------------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any], Tuple[Any, Any]]:
        x = self.patch_embed(x)
        H, W = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            x = x + self.pos_embed(H, W)
        return self.pos_drop(x), (H, W), (H, W)  # every XCA block also takes the grid

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the class token to the patch tokens ``x`` and run the class-attention blocks."""
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.cls_attn_blocks:
            x = run_checkpointed(self.grad_checkpointing, block, x)
        return x


# ---- variants -------------------------------------------------------------------------------------------------------
# nano 128 wide / 4 heads, tiny 192 / 4, small 384 / 8, medium 512 / 8, large 768 / 16; the number is the depth.
# The 12-deep models start their layer scales at 1, the 24-deep at 1e-5; only nano normalizes the class token alone.

_SIZES = {'nano': (128, 4), 'tiny': (192, 4), 'small': (384, 8), 'medium': (512, 8), 'large': (768, 16)}


def _row(size: str, depth: int, patch_size: int, img_size: int) -> Dict[str, Any]:
    embed_dim, num_heads = _SIZES[size]
    return dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                eta=1.0 if depth == 12 else 1e-5, tokens_norm=size != 'nano', img_size=img_size)


VARIANTS: Dict[str, Dict[str, Any]] = {
    f'xcit_{size}_{depth}_p{patch}_{img}': _row(size, depth, patch, img)
    for size, depth in (('nano', 12), ('tiny', 12), ('small', 12), ('tiny', 24), ('small', 24), ('medium', 24),
                        ('large', 24))
    for patch in (16, 8) for img in (224, 384)
}


# ---- checkpoints and the spec ---------------------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Xcit) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model`` as timm does: the original release's ``model`` wrapper goes, its
    ``pos_embeder.`` keys become ``pos_embed.`` (dropped for a model without the encoding), and a fused ``qkv``
    projection of the class attention is split into ``q``, ``k``, ``v``.

    >>> m = SPEC.build('xcit_nano_12_p16_224', depth=1)
    >>> sd = {k.replace('pos_embed.', 'pos_embeder.'): v for k, v in m.state_dict().items()}
    >>> sorted(set(checkpoint_filter_fn(sd, m)) ^ set(m.state_dict()))
    []
    """
    state_dict = state_dict.get('model', state_dict)
    keep_pos = getattr(model, 'pos_embed', None) is not None
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(('pos_embeder.', 'pos_embed.')):
            if not keep_pos:
                continue
            key = key.replace('pos_embeder.', 'pos_embed.', 1)
        if key.startswith('cls_attn_blocks.') and '.attn.qkv.' in key:
            for name, part in zip('qkv', value.reshape(3, -1, *value.shape[1:]).unbind(0)):
                out[key.replace('.attn.qkv.', f'.attn.{name}.')] = part
            continue
        out[key] = value
    return out


def create_feature_pyramid(model: Xcit, out_indices: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """The plain-ViT simple pyramid (strides 4, 8, 16, 32) from four tapped blocks, with the stride read from the
    patch size (the convolutional patch embedding has no ``feat_ratio``).

    >>> [lv['reduction'] for lv in create_feature_pyramid(SPEC.build('xcit_nano_12_p8_224'))['pyramid_levels']]
    [4, 8, 16, 32]
    """
    return token_pyramid(model, out_indices, stride=model.patch_embed.patch_size)


SPEC = FamilySpec(
    name='xcit', model=Xcit, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    # not 'fx': its token-to-map step strips num_prefix_tokens (1) tokens from each tapped block, but XCiT's blocks
    # carry none (the class token joins after them)
    # inputs in whole patches: the patch embedding's strided convolutions take any side, but only multiples of the
    # patch tile it exactly
    feature_cls=('getter',), default_feature_cls='getter', size_args=('eta',),
    checkpoint_filter=checkpoint_filter_fn, feature_pyramid=create_feature_pyramid, **SQUARE_PATCH_SPEC)
