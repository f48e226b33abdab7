"""Register a class in an mmdet3d registry under its upstream name, only if that name is free
(so an installed OneFormer3D, imported first, keeps its own implementation)."""


def register_if_absent(registry, name=None):
    """Class decorator: ``registry.register_module(name=name)`` unless ``name`` is taken."""

    def wrap(cls):
        key = name or cls.__name__
        if key not in registry.module_dict:
            registry.register_module(name=key, module=cls)
        return cls

    return wrap
