"""Every influencer_core criterion option reaches the core from a 3D config: InfluencerCriterion
passes its options through to the core class of its variant (the 2D side:
tests/2d/test_2d_criterion_options.py)."""
import warnings

import pytest

from influencer_core import OTInfluencerCriterion, ReferenceInfluencerCriterion, criterion_options


@pytest.mark.parametrize("variant, core_cls",
                         [("ot", OTInfluencerCriterion), ("reference", ReferenceInfluencerCriterion)])
def test_3d_criterion_sets_every_core_option(variant, core_cls):
    pytest.importorskip("mmdet3d")
    from influencerformer3d.models.influencer_criterion import CORE_ONLY, DEFAULTS, InfluencerCriterion

    options = criterion_options(core_cls)
    for option, default in options.items():
        if option in CORE_ONLY:
            continue
        value = DEFAULTS.get(option, default)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            crit = InfluencerCriterion(num_classes=4, variant=variant, **{option: value})
        assert isinstance(crit.core, core_cls)
    # the ones set another way
    crit = InfluencerCriterion(num_classes=4, variant=variant, loss_weight=[0.7, 2.0, 0.3], non_object_weight=0.2)
    assert crit.core.class_weight == 0.7 and crit.core.no_object_weight == 0.2 and crit.core.score_weight == 0.3
    # the project's 3D defaults reach the core
    crit = InfluencerCriterion(num_classes=4, variant=variant)
    for option, value in DEFAULTS.items():
        if option in options:
            stored = getattr(crit.core, option, None)
            if stored is None:  # the reference loss keeps its terms in mask_loss
                stored = getattr(crit.core.mask_loss, option)
            assert stored == value, option


def test_3d_criterion_rejects_unknown_and_warns_on_other_variants_options():
    pytest.importorskip("mmdet3d")
    from influencerformer3d.models.influencer_criterion import InfluencerCriterion

    with pytest.raises(TypeError, match="unknown options.*'epsilonn'"):
        InfluencerCriterion(num_classes=4, epsilonn=0.1)
    with pytest.raises(TypeError, match="num_points: set by image mode only"):
        InfluencerCriterion(num_classes=4, num_points=100)
    with pytest.warns(UserWarning, match=r"variant='ot'.*\['attr_weight'\]"):
        InfluencerCriterion(num_classes=4, variant="ot", attr_weight=1.0)
    crit = InfluencerCriterion(num_classes=4, iter_matcher=False, exclusion_overlap=0.3, aux_capacity=2.0)
    assert crit.core.reuse_final_plan and crit.core.exclusion_overlap == 0.3 and crit.core.aux_capacity == 2.0
