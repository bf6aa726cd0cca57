"""Patch embedding of hybrid ViTs: a CNN trunk (child ``backbone``) whose final map is projected to tokens (``proj``)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import to_2tuple

SizeArg = Union[int, Tuple[int, int]]


class HybridEmbed(nn.Module):
    """A CNN trunk then a ``patch_size`` x ``patch_size`` projection of its map to ``embed_dim`` channels, output
    channels-last (B, H, W, C), with :class:`~featzoo.layers.patch_embed.PatchEmbed`'s interface (``grid_size``,
    ``num_patches``, ``feat_ratio``, ``set_input_size``) so a ViT takes either.

    The trunk's stride ``feature_ratio`` and width ``feature_dim`` are given, not measured by a trial forward, so the
    embedding builds on the meta device. ``proj=False`` keeps the trunk's map as the tokens (its width must then be
    ``embed_dim``).

    >>> trunk = nn.Conv2d(3, 8, 4, stride=4)
    >>> embed = HybridEmbed(trunk, feature_ratio=4, feature_dim=8, img_size=32, patch_size=2, embed_dim=16)
    >>> embed(torch.ones(1, 3, 32, 48)).shape, embed.grid_size, embed.feat_ratio()
    (torch.Size([1, 4, 6, 16]), (4, 4), 8)
    """

    def __init__(self, backbone: nn.Module, feature_ratio: int, feature_dim: int, img_size: Optional[SizeArg] = 224,
                 patch_size: SizeArg = 1, in_chans: int = 3, embed_dim: int = 768, bias: bool = True,
                 proj: bool = True, dynamic_img_pad: bool = False) -> None:
        super().__init__()
        self.patch_size: Tuple[int, int] = to_2tuple(patch_size)
        if len(self.patch_size) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1
                                            for p in self.patch_size):
            raise ValueError(f'patch_size must be a positive int or a pair of them, got {patch_size!r}')
        if not proj and (feature_dim != embed_dim or self.patch_size != (1, 1)):
            raise ValueError(f'proj=False uses the trunk map as tokens: it needs patch_size=1 and embed_dim equal to '
                             f'the trunk width {feature_dim}, got patch_size={patch_size!r}, embed_dim={embed_dim}')
        self.backbone = backbone
        self.in_chans = in_chans
        self.feature_ratio: Tuple[int, int] = to_2tuple(feature_ratio)
        self.feature_dim = feature_dim
        self.dynamic_img_pad = dynamic_img_pad
        self.img_size, self.grid_size, self.num_patches = self._grid(img_size)
        self.proj = (nn.Conv2d(feature_dim, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
                     if proj else nn.Identity())

    def _grid(self, img_size: Optional[SizeArg]):
        if img_size is None:
            return None, None, None
        size = to_2tuple(img_size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f'img_size must be a positive int or a pair of them, got {img_size!r}')
        stride = self.feat_ratio(as_scalar=False)
        grid = (size[0] // stride[0], size[1] // stride[1])
        if grid[0] < 1 or grid[1] < 1:
            raise ValueError(f'img_size {size} is smaller than the embedding stride {stride}')
        return size, grid, grid[0] * grid[1]

    def set_input_size(self, img_size: SizeArg) -> None:
        """Change the reference image size (and so ``grid_size``); the weights are unchanged.

        >>> e = HybridEmbed(nn.Identity(), 4, 3, img_size=32, embed_dim=8); e.set_input_size(64); e.grid_size
        (16, 16)
        """
        self.img_size, self.grid_size, self.num_patches = self._grid(img_size)

    def feat_ratio(self, as_scalar: bool = True) -> Union[int, Tuple[int, int]]:
        """Stride of the token grid relative to the image: the trunk's stride times the patch.

        >>> HybridEmbed(nn.Identity(), 16, 3, embed_dim=8, patch_size=2).feat_ratio()
        32
        """
        ratio = (self.feature_ratio[0] * self.patch_size[0], self.feature_ratio[1] * self.patch_size[1])
        return max(ratio) if as_scalar else ratio

    def dynamic_feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """Token grid this module produces for an image of ``img_size`` (H, W) whose sides the trunk divides.

        >>> HybridEmbed(nn.Identity(), 4, 3, embed_dim=8, patch_size=2).dynamic_feat_size((64, 40))
        (8, 5)
        """
        h, w = img_size[0] // self.feature_ratio[0], img_size[1] // self.feature_ratio[1]
        if self.dynamic_img_pad:
            return -(-h // self.patch_size[0]), -(-w // self.patch_size[1])
        return h // self.patch_size[0], w // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        if self.dynamic_img_pad:
            ph, pw = self.patch_size
            x = F.pad(x, (0, (pw - x.shape[-1] % pw) % pw, 0, (ph - x.shape[-2] % ph) % ph))
        return self.proj(x).permute(0, 2, 3, 1)
