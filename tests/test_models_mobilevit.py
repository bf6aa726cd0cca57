"""mobilevit (MobileViT v1 and v2 on the byobnet trunk): what is specific to this family.

The generic suites hold every row to timm at output strides 32, 16 and 8 (timm's ByobNet dilates these too) on inputs
that are whole numbers of patches. Here: maps that are not whole patches are resampled as timm resamples them (v1
up and back down, v2 up only), and the trunk's ``stage_tail`` argument refuses what it cannot build.
"""
from __future__ import annotations

import pytest

import featzoo
from featzoo.models.byobnet import ByobNet
from featzoo.models.mobilevit import PATCH_MULTIPLE, SPEC, TAIL_BLOCKS
from helpers import timm_parity


def _shallow(name: str) -> dict:
    return dict(depths=(1,) * len(SPEC.row(name)['depths']))


@pytest.mark.parametrize('name', ['mobilevit_xxs', 'mobilevitv2_050'])
def test_maps_that_are_not_whole_patches_are_resampled_as_timm_does(name):
    # 96 x 80 px: 3 x 2.5 patch maps at the last stage, 6 x 5 one stage earlier: both kinds of block resample
    timm_parity(name, input_size=(1, 3, 96, 80), check_features=False)


def test_declared_input_sides_are_whole_patches_at_every_level():
    for name in SPEC.variants:
        assert SPEC.input_multiple_for(name) == SPEC.min_input_size_for(name) == PATCH_MULTIPLE
        tails = [t for t in SPEC.row(name)['stage_tail'] if t is not None]
        assert all(PATCH_MULTIPLE % (32 * t['patch_size']) == 0 for t in tails)


def test_stage_tail_refuses_what_it_cannot_build():
    row = dict(SPEC.row('mobilevitv2_050'), tail_blocks=TAIL_BLOCKS)
    with pytest.raises(ValueError, match=r"one entry .* per stage \(5\)"):
        ByobNet(**dict(row, stage_tail=(None, None)))
    with pytest.raises(ValueError, match=r"\['mobilevit', 'mobilevit2'\]"):
        ByobNet(**dict(row, stage_tail=(None, None, dict(type='swin'), None, None)))
    with pytest.raises(ValueError, match=r'type is one of \[\]'):
        ByobNet(**dict(SPEC.row('mobilevitv2_050')))  # the byobnet trunk alone knows no tail blocks


def test_tail_blocks_count_in_the_drop_path_schedule():
    model = featzoo.create_model('mobilevit_xxs', drop_path_rate=0.1, **_shallow('mobilevit_xxs'))
    tails = [stage[-1] for stage in model.stages if type(stage[-1]).__name__ == 'MobileVitBlock']
    assert len(tails) == 3
    assert abs(tails[-1].transformer[0].drop_path1.drop_prob - 0.1) < 1e-9, 'the last block gets the full rate'
    # one unit in each of the first two stages, an inverted residual and a tail in the last three: 8 units
    assert abs(tails[0].transformer[0].drop_path1.drop_prob - 0.1 * 3 / 7) < 1e-9
