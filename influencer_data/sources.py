"""Raw files of the converters: :class:`RawDataError` for a malformed one, and a record of the
raw files each converted room / scene was made from, so that a re-run of a converter rebuilds
outputs whose raw files changed instead of silently reusing them.

A :class:`SourceRecord` is a small JSON file next to the converted data (``s3dis_sources.json``,
``scannet_sources.json``): per output key (room / scene name) the size and modification time of
every raw file it was converted from, plus the settings that shaped it (e.g. the superpoint
method).  Outputs converted before such a record existed are judged by modification times
(a raw file newer than the output is stale) and then adopted into the record.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterable, Mapping, Optional

__all__ = ['RawDataError', 'SourceRecord', 'file_stats']

_VERSION = 1


class RawDataError(ValueError):
    """A raw dataset file a converter cannot use; the message names the file and the fix."""


def file_stats(files: Mapping[str, str]) -> Dict[str, list]:
    """{name: [size in bytes, mtime in ns]} for ``files`` = {name: path}."""
    out = {}
    for name, path in files.items():
        st = os.stat(path)
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _listing(names: Iterable[str], limit: int = 3) -> str:
    names = sorted(names)
    return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit else '')


class SourceRecord:
    """The record at ``path`` (empty when the file does not exist yet).

    :meth:`stale_reason` says whether an output is out of date, :meth:`record` notes a fresh
    conversion, :meth:`save` writes the file (atomically)."""

    def __init__(self, path: str):
        self.path = path
        self.entries: Dict[str, dict] = {}
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):   # unreadable record: judge by modification times
                data = {}
            if data.get('version') == _VERSION:
                self.entries = dict(data.get('entries', {}))

    def stale_reason(self, key: str, files: Mapping[str, str], outputs: Iterable[str],
                     settings: Optional[Mapping] = None) -> Optional[str]:
        """None when the ``outputs`` (paths) of ``key`` are up to date with the raw ``files``
        ({name: path}) and match ``settings`` (values the output must have been made with);
        otherwise why they are not (for the log line)."""
        now = file_stats(files)
        entry = self.entries.get(key)
        if entry is None:   # converted before records were kept: compare modification times
            oldest_out = min(os.stat(p).st_mtime_ns for p in outputs)
            newer = [n for n, (_, mtime) in now.items() if mtime > oldest_out]
            return f'{_listing(newer)} newer than the converted files' if newer else None
        for k, v in (settings or {}).items():
            if entry.get('settings', {}).get(k) != v:
                return f'{k} was {entry.get("settings", {}).get(k)!r}, now {v!r}'
        old = entry.get('files', {})
        changed = [n for n in now if n in old and list(old[n]) != now[n]]
        added = [n for n in now if n not in old]
        removed = [n for n in old if n not in now]
        parts = [f'{_listing(names)} {what}' for names, what in
                 ((changed, 'changed'), (added, 'added'), (removed, 'removed')) if names]
        return '; '.join(parts) + ' since the last conversion' if parts else None

    def record(self, key: str, files: Mapping[str, str], settings: Optional[Mapping] = None) -> None:
        """Note that ``key`` is now converted from ``files`` ({name: path}) with ``settings``."""
        self.entries[key] = dict(files=file_stats(files), settings=dict(settings or {}))

    def save(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(dict(version=_VERSION, entries=self.entries), f, indent=0, sort_keys=True)
        os.replace(tmp, self.path)
