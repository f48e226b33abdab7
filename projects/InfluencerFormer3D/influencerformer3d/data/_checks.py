"""Clear errors for datasets whose files have not been prepared yet."""
import os.path as osp


class DatasetNotPreparedError(FileNotFoundError):
    """A dataset's ``data_root`` / ``ann_file`` / point folder is missing; the message says
    which command prepares it."""


def _is_local(path):
    return '://' not in str(path)


def check_prepared(dataset, data_root, ann_file, data_prefix, how_to, backend_args=None):
    """Raise :class:`DatasetNotPreparedError` (message: what is missing + ``how_to``) unless
    ``data_root``, ``ann_file`` (relative to ``data_root`` unless absolute) and the point
    folder ``data_prefix['pts']`` exist. Remote paths / custom backends are not checked."""
    if backend_args is not None or not ann_file:
        return
    paths = [p for p in (data_root, ann_file) if p]
    if not all(_is_local(p) for p in paths):
        return

    def under_root(path):
        return path if (data_root is None or osp.isabs(path)) else osp.join(data_root, path)

    ann_path = under_root(ann_file)
    missing = None
    if data_root and not osp.isdir(data_root):
        missing = f'data_root {data_root!r} does not exist'
    elif not osp.isfile(ann_path):
        missing = f'annotation file {ann_path!r} does not exist'
    else:
        pts = (data_prefix or {}).get('pts')
        if pts:
            pts_dir = under_root(pts)
            if _is_local(pts_dir) and not osp.isdir(pts_dir):
                missing = f'point folder {pts_dir!r} does not exist'
    if missing is not None:
        raise DatasetNotPreparedError(f'{dataset}: {missing}.\n{how_to}')
