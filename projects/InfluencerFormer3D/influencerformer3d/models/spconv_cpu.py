"""Make spconv 2.x backward usable on machines without an NVIDIA driver.

spconv's CPU build runs forward passes fine, but several backward kernels (and the hash
table helpers) ask for the current CUDA stream through ``get_current_stream()``, which calls
``torch.cuda.current_stream()`` and raises "Found no NVIDIA driver" on a CPU-only host. The
stream handle is ignored by the CPU kernels, so returning ``0`` there is enough.

``get_current_stream`` is imported *by name* into ``spconv.pytorch.ops`` and
``spconv.pytorch.hash``, so the three module attributes are replaced. The replacement defers to
the original function whenever CUDA is available, which keeps GPU behaviour unchanged even if
the patch was applied.
"""
import functools
import importlib

import torch

_MODULES = ('spconv.pytorch.cppcore', 'spconv.pytorch.ops', 'spconv.pytorch.hash')
# autograd Functions whose CPU kernels race when torch runs them on several threads
_FUNCTIONS = ('SparseConvFunction', 'SparseInverseConvFunction', 'SparseImplicitGemmFunction',
              'SubMConvFunction', 'SparseMaxPoolFunction', 'SparseMaxPoolImplicitGemmFunction',
              'SparseAvgPoolImplicitGemmFunction')
_PATCH_FLAG = '_influencerformer_cpu_patch'


def _make_cpu_safe(original):

    def get_current_stream():
        if not torch.cuda.is_available():
            return 0
        return original()

    setattr(get_current_stream, _PATCH_FLAG, True)
    get_current_stream.__wrapped__ = original
    get_current_stream.__doc__ = ('CUDA stream handle, or 0 when no CUDA device is '
                                  'available (spconv CPU backward).')
    return get_current_stream


def is_spconv_cpu_backward_enabled():
    """True when every spconv module that uses ``get_current_stream`` is patched."""
    try:
        mods = [importlib.import_module(name) for name in _MODULES]
    except ImportError:
        return False
    return all(getattr(getattr(m, 'get_current_stream', None), _PATCH_FLAG, False)
               for m in mods)


def enable_spconv_cpu_backward():
    """Patch spconv so that its backward pass works without CUDA. Idempotent.

    Returns:
        bool: True if the patch is in place (now or before), False if spconv is missing.
    """
    try:
        mods = [importlib.import_module(name) for name in _MODULES]
    except ImportError:
        return False
    original = None
    for m in mods:
        fn = getattr(m, 'get_current_stream', None)
        if fn is not None and not getattr(fn, _PATCH_FLAG, False):
            original = fn
            break
    if original is None:  # already patched everywhere (or nothing to patch)
        return is_spconv_cpu_backward_enabled()
    patched = _make_cpu_safe(original)
    for m in mods:
        fn = getattr(m, 'get_current_stream', None)
        if fn is None or not getattr(fn, _PATCH_FLAG, False):
            m.get_current_stream = patched
    return True


def _single_threaded_on_cpu(fn):
    """Run an autograd Function's forward/backward with one intra-op thread when its inputs are on the CPU."""

    @functools.wraps(fn)
    def wrapped(ctx, *args, **kwargs):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is None or first.is_cuda:
            return fn(ctx, *args, **kwargs)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(ctx, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    setattr(wrapped, _PATCH_FLAG, True)
    return wrapped


def serialise_spconv_cpu_kernels():
    """Make spconv's CPU convolution/pooling kernels run single-threaded. Idempotent.

    With two or more torch threads, spconv 2.3's CPU kernels occasionally return wrong values
    (a race; seen in about 1 of 60 SubMConv3d calls against a dense conv3d reference, errors
    around 0.2); with one thread they always match.  GPU tensors are not affected.
    """
    try:
        func = importlib.import_module('spconv.pytorch.functional')
    except ImportError:
        return False
    for name in _FUNCTIONS:
        cls = getattr(func, name, None)
        if cls is None:
            continue
        for meth in ('forward', 'backward'):
            raw = cls.__dict__.get(meth)
            raw = raw.__func__ if isinstance(raw, staticmethod) else raw
            if raw is not None and not getattr(raw, _PATCH_FLAG, False):
                setattr(cls, meth, staticmethod(_single_threaded_on_cpu(raw)))
    return True


def maybe_enable_spconv_cpu_backward():
    """On hosts without CUDA: make spconv's backward work and its CPU kernels race-free."""
    if torch.cuda.is_available():
        return False
    serialise_spconv_cpu_kernels()
    return enable_spconv_cpu_backward()
