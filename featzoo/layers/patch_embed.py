"""Image to patch tokens: one strided convolution, with a choice of output layout."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import to_2tuple

PATCH_OUTPUT_FORMATS = ('NCHW', 'NHWC', 'NLC', 'NCL')

SizeArg = Union[int, Tuple[int, int]]


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and project each to ``embed_dim`` (child ``proj``, ``norm``).

    ``flatten=True`` (the default) returns tokens (B, N, C); ``output_fmt`` ('NCHW', 'NHWC', 'NLC', 'NCL') overrides
    it. ``img_size`` only fixes the reference grid (``grid_size``, ``num_patches``) used by position embeddings;
    any input size works, the remainder of a size that is not a multiple of the patch is cropped by the convolution,
    or zero-padded on the bottom/right with ``dynamic_img_pad=True``. ``norm`` runs on the output layout.

    >>> PatchEmbed(224, 16, 3, 64)(torch.ones(1, 3, 32, 48)).shape
    torch.Size([1, 6, 64])
    >>> PatchEmbed(None, 4, 3, 8, output_fmt='NHWC', norm_layer=nn.LayerNorm)(torch.ones(1, 3, 8, 12)).shape
    torch.Size([1, 2, 3, 8])
    """

    def __init__(self, img_size: Optional[SizeArg] = 224, patch_size: SizeArg = 16, in_chans: int = 3,
                 embed_dim: int = 768, norm_layer: Optional[type] = None, flatten: bool = True,
                 output_fmt: Optional[str] = None, bias: bool = True, dynamic_img_pad: bool = False) -> None:
        super().__init__()
        self.patch_size: Tuple[int, int] = to_2tuple(patch_size)
        if len(self.patch_size) != 2 or any(not isinstance(p, int) or p < 1 for p in self.patch_size):
            raise ValueError(f'patch_size must be a positive int or a pair of them, got {patch_size!r}')
        if output_fmt is not None and output_fmt not in PATCH_OUTPUT_FORMATS:
            raise ValueError(f'unknown output_fmt {output_fmt!r}; valid: {PATCH_OUTPUT_FORMATS} or None')
        self.img_size, self.grid_size, self.num_patches = self._grid(img_size)
        # flatten=True is the token layout ViTs consume; an explicit output_fmt wins over it
        self.output_fmt = output_fmt if output_fmt is not None else ('NLC' if flatten else 'NCHW')
        self.flatten = self.output_fmt == 'NLC'
        self.dynamic_img_pad = dynamic_img_pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def _grid(self, img_size: Optional[SizeArg]):
        if img_size is None:
            return None, None, None
        img_size = to_2tuple(img_size)
        if len(img_size) != 2 or any(not isinstance(s, int) or s < 1 for s in img_size):
            raise ValueError(f'img_size must be a positive int or a pair of them, got {img_size!r}')
        grid = (img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1])
        if grid[0] < 1 or grid[1] < 1:
            raise ValueError(f'img_size {img_size} is smaller than the patch size {self.patch_size}')
        return img_size, grid, grid[0] * grid[1]

    def set_input_size(self, img_size: SizeArg) -> None:
        """Change the reference image size (and so ``grid_size``); the weights are unchanged.

        >>> p = PatchEmbed(224, 16); p.set_input_size(256); p.grid_size
        (16, 16)
        """
        self.img_size, self.grid_size, self.num_patches = self._grid(img_size)

    def feat_ratio(self, as_scalar: bool = True) -> Union[int, Tuple[int, int]]:
        """Stride of the output grid relative to the image.

        >>> PatchEmbed(224, 14).feat_ratio()
        14
        """
        return max(self.patch_size) if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """Grid size this module produces for an image of ``img_size`` (H, W).

        >>> PatchEmbed(224, 16, dynamic_img_pad=True).dynamic_feat_size((40, 64))
        (3, 4)
        """
        if self.dynamic_img_pad:
            return -(-img_size[0] // self.patch_size[0]), -(-img_size[1] // self.patch_size[1])
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_img_pad:
            ph, pw = self.patch_size
            x = F.pad(x, (0, (pw - x.shape[-1] % pw) % pw, 0, (ph - x.shape[-2] % ph) % ph))
        x = self.proj(x)
        if self.output_fmt == 'NHWC':
            x = x.permute(0, 2, 3, 1)
        elif self.output_fmt == 'NLC':
            x = x.flatten(2).transpose(1, 2)
        elif self.output_fmt == 'NCL':
            x = x.flatten(2)
        # the norm sees the output layout, so a caller picks a norm that matches it (LayerNorm2d for NCHW)
        return self.norm(x)
