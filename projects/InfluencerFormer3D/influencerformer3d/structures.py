"""Ground-truth containers and field access shared by the plugin's data pipeline and criteria.

* :class:`LooseInstanceData` - mmengine's ``InstanceData`` without the equal-length check
  between fields (OneFormer3D's ``InstanceData_``);
* :func:`get_field` / :func:`get_optional_field` - read a field of a ground-truth entry that
  may be a dict or a data element (``InstanceData``, ``PointData``, any object with
  attributes).
"""
from collections.abc import Sized

from mmengine.structures import BaseDataElement, InstanceData

__all__ = ['LooseInstanceData', 'MissingFieldError', 'get_field', 'get_optional_field']


class LooseInstanceData(InstanceData):
    """``InstanceData`` whose fields may differ in length (OneFormer3D's ``InstanceData_``):
    e.g. ``labels_3d`` [K + C + 1] next to ``sp_masks`` [K + C + 1, S] and ``sp_sem_masks``
    [C + 1, P]. Every field must still have a length (tensor, array, list); ``len()`` is that
    of one of the fields (``InstanceData``'s rule), so do not rely on it."""

    def __setattr__(self, name, value):
        if name not in ('_metainfo_fields', '_data_fields') and not isinstance(value, Sized):
            raise TypeError(f'{type(self).__name__} field {name!r} must have a length (tensor, '
                            f'array, list), got {type(value).__name__}')
        # BaseDataElement.__setattr__: InstanceData's, minus the length check
        BaseDataElement.__setattr__(self, name, value)

    __setitem__ = __setattr__


class MissingFieldError(KeyError, AttributeError):
    """A required field is missing: both a ``KeyError`` (dict entries) and an
    ``AttributeError`` (data elements), so either ``except`` catches it."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def _fields(obj):
    if isinstance(obj, dict):
        return sorted(map(str, obj))
    if isinstance(obj, BaseDataElement):
        return sorted(obj.keys())
    return sorted(k for k in vars(obj) if not k.startswith('_')) if hasattr(obj, '__dict__') else []


def get_field(obj, name):
    """``obj[name]`` for a dict, else ``getattr(obj, name)``.

    Raises :class:`MissingFieldError` (a ``KeyError`` and an ``AttributeError``) naming the
    field and the fields ``obj`` has."""
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
    else:
        try:
            return getattr(obj, name)
        except AttributeError:
            pass
    raise MissingFieldError(f'{type(obj).__name__} has no field {name!r} (it has: '
                            f'{", ".join(_fields(obj)) or "none"})')


def get_optional_field(obj, name, default=None):
    """``obj.get(name, default)`` for a dict or any object with a ``get`` method (mmengine data
    elements), else ``getattr(obj, name, default)``."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    getter = getattr(obj, 'get', None)
    if callable(getter):  # mmengine data elements
        return getter(name, default)
    return getattr(obj, name, default)
