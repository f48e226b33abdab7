"""Every influencer_core criterion option reaches the core from the 2D config through its one
mapping (influencerformer2d.config.CRITERION_OPTION_KEYS): a new core option without a key fails
here.  The 3D side: tests/3d/test_3d_criterion_options.py."""
import pytest

from influencer_core import CRITERIA, criterion_options


def test_2d_config_sets_every_option_of_every_criterion(monkeypatch):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from influencerformer2d import add_influencerformer_config
    from influencerformer2d import influencerformer_model as model_mod
    from influencerformer2d.config import CRITERION_NAMES, CRITERION_OPTION_KEYS, NOT_IN_2D

    assert set(CRITERION_NAMES) == {"hungarian", "reference", "ot"} <= set(CRITERIA)
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_influencerformer_config(cfg)
    for name in CRITERION_NAMES:
        options = criterion_options(CRITERIA[name])
        missing = sorted(set(options) - set(CRITERION_OPTION_KEYS) - set(NOT_IN_2D))
        assert not missing, f"core options of '{name}' without a MODEL.MASK_FORMER key: {missing}"
        captured = {}
        monkeypatch.setattr(model_mod, "build_criterion", lambda n, **kw: captured.update(kw, name=n))
        cfg.MODEL.MASK_FORMER.CRITERION = name
        model_mod.build_criterion_from_cfg(cfg, 7)
        assert captured.pop("name") == name and captured.pop("num_classes") == 7
        assert set(captured) == set(options) - set(NOT_IN_2D)
        for option, value in captured.items():
            node = cfg.MODEL.MASK_FORMER
            for part in CRITERION_OPTION_KEYS[option].split("."):
                node = node[part]
            assert value == node, option
