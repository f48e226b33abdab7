"""Registration of the plugin's classes in mmdet3d's registries: one rule, as class decorators.

A class is registered under its name (default: the class name) **only if that name is still
free** in the registry, so that an upstream implementation imported first (OneFormer3D's
``oneformer3d`` package registers many of the same names) keeps its own class and importing
both does not fail on a duplicate name. ``only_without='pkg'`` additionally skips the
registration where the top-level package ``pkg`` is installed (found by
``importlib.util.find_spec``), whether or not it is imported yet: for names that the upstream
package registers itself and would fail on if ours came first.

    @register_model()                                        # MODELS['SpConvUNet']
    class SpConvUNet(...): ...

    @register_model('InstanceCriterion', only_without='oneformer3d')
    @register_model()
    class HungarianInstanceCriterion: ...                    # both names, the 2nd conditionally

Every decorator returns the class unchanged.
"""
import importlib.util

from mmdet3d.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS

__all__ = ['register', 'register_model', 'register_transform', 'register_dataset',
           'register_metric', 'register_hook']


def register(registry, name=None, *, only_without=None):
    """Class decorator: ``registry.register_module(name=name, module=cls)`` unless ``name``
    (default ``cls.__name__``) is already in ``registry.module_dict`` or the package
    ``only_without`` is installed. Returns the class unchanged."""
    if isinstance(name, type):
        raise TypeError(f'register(...) is a decorator factory: write @register(registry) '
                        f'(with parentheses) above {name.__name__}')

    def wrap(cls):
        key = name or cls.__name__
        if only_without is not None and importlib.util.find_spec(only_without) is not None:
            return cls
        if key not in registry.module_dict:
            registry.register_module(name=key, module=cls)
        return cls

    return wrap


def register_model(name=None, *, only_without=None):
    """:func:`register` in mmdet3d's ``MODELS``."""
    return register(MODELS, name, only_without=only_without)


def register_transform(name=None, *, only_without=None):
    """:func:`register` in mmdet3d's ``TRANSFORMS``."""
    return register(TRANSFORMS, name, only_without=only_without)


def register_dataset(name=None, *, only_without=None):
    """:func:`register` in mmdet3d's ``DATASETS``."""
    return register(DATASETS, name, only_without=only_without)


def register_metric(name=None, *, only_without=None):
    """:func:`register` in mmdet3d's ``METRICS``."""
    return register(METRICS, name, only_without=only_without)


def register_hook(name=None, *, only_without=None):
    """:func:`register` in mmdet3d's ``HOOKS``."""
    return register(HOOKS, name, only_without=only_without)
