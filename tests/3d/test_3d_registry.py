"""influencerformer3d.registry (register only where the name is free) and
influencerformer3d.structures (LooseInstanceData, field access)."""
import pytest
import torch

from mmengine.registry import Registry
from mmengine.structures import InstanceData

import influencerformer3d
from influencerformer3d import registry as reg
from influencerformer3d.structures import LooseInstanceData, MissingFieldError, get_field, get_optional_field


def test_register_only_where_the_name_is_free():
    r = Registry('test')

    @reg.register(r)
    class A:
        pass

    @reg.register(r, 'A')      # taken: the first class stays
    class B:
        pass

    @reg.register(r, 'B2')
    @reg.register(r)
    class C:
        pass

    assert r.module_dict == {'A': A, 'C': C, 'B2': C}
    assert B.__name__ == 'B'   # returned unchanged


def test_only_without_skips_where_the_package_is_installed():
    r = Registry('test')

    @reg.register(r, 'Upstream', only_without='os')          # installed -> skipped
    @reg.register(r, 'Ours', only_without='no_such_package_xyz')  # absent -> registered
    class A:
        pass

    assert r.module_dict == {'Ours': A}


def test_register_needs_parentheses():
    with pytest.raises(TypeError, match='parentheses'):
        @reg.register_model
        class A:
            pass


def test_the_plugin_registers_in_mmdet3d_registries():
    from mmdet3d.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
    for registry, names in ((MODELS, ('SpConvUNet', 'QueryDecoder', 'ScanNetQueryDecoder',
                                      'S3DISOneFormer3D', 'ScanNetOneFormer3D',
                                      'S3DISUnifiedCriterion', 'ScanNetUnifiedCriterion',
                                      'S3DISSemanticCriterion', 'ScanNetSemanticCriterion',
                                      'Det3DDataPreprocessor_')),
                            (TRANSFORMS, ('Pack3DDetInputs_', 'PointSample_', 'LoadAnnotations3D_')),
                            (DATASETS, ('S3DISSegDataset_', 'ScanNetSegDataset_', 'OwnSegDataset')),
                            (METRICS, ('UnifiedSegMetric',)),
                            (HOOKS, ('EpsilonAnnealingHook', 'CapacityAnnealingHook'))):
        for name in names:
            assert name in registry.module_dict, (registry.name, name)
    # importing a module again (e.g. under another name) does not fail on its taken names
    import importlib.util
    path = influencerformer3d.hooks.__file__
    spec = importlib.util.spec_from_file_location('influencerformer3d._hooks_again', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert HOOKS.module_dict['EpsilonAnnealingHook'] is influencerformer3d.hooks.EpsilonAnnealingHook


def test_loose_instance_data_allows_unequal_lengths():
    gt = LooseInstanceData()
    gt.labels_3d = torch.zeros(3)
    gt.sp_sem_masks = torch.zeros(5, 7)
    gt['sp_masks'] = torch.zeros(2, 7)
    assert isinstance(gt, InstanceData) and gt.sp_sem_masks.shape == (5, 7)
    with pytest.raises(TypeError, match='must have a length'):
        gt.count = 3
    strict = InstanceData(labels_3d=torch.zeros(3))
    with pytest.raises(AssertionError):
        strict.sp_sem_masks = torch.zeros(5, 7)


def test_get_field_and_get_optional_field():
    gt = LooseInstanceData()
    gt.sp_masks = torch.ones(2, 3)
    d = {'sp_masks': torch.zeros(1)}

    class Plain:
        def __init__(self):
            self.sp_masks = 7

    for obj, value in ((gt, gt.sp_masks), (d, d['sp_masks']), (Plain(), 7)):
        assert get_field(obj, 'sp_masks') is value
        assert get_optional_field(obj, 'sp_masks') is value
        assert get_optional_field(obj, 'query_masks') is None
        assert get_optional_field(obj, 'query_masks', 5) == 5
        with pytest.raises(KeyError, match="no field 'query_masks'.*sp_masks"):
            get_field(obj, 'query_masks')
        with pytest.raises(AttributeError):
            get_field(obj, 'query_masks')
    assert issubclass(MissingFieldError, KeyError) and issubclass(MissingFieldError, AttributeError)
