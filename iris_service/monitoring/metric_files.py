"""Reading the multiprocess metric files while a process is creating one.

Every worker of `bentoml serve` writes its metrics to files of its own in
`PROMETHEUS_MULTIPROC_DIR`, and a scrape of `/metrics` reads all of them. prometheus_client
(0.26) creates such a file first and sizes it afterwards, so for a moment it exists with 0
bytes; a scrape in that moment fails on the missing header, and the whole `/metrics` answer
becomes a 500 — every worker's metrics lost with it, not only the new file's. A process killed
in that moment leaves the empty file behind, and then every scrape fails until the directory
is cleared (prometheus/client_python issue 1199; the fix proposed there, pull request 1207, is
not released). Our suite met it on a scrape as the second API worker was starting.

`read_empty_metric_files_as_empty()` makes the reader take an empty file for what the writer
takes it for, a file with nothing recorded yet; every other file is read as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.mmap_dict import MmapedDict

_read_all_values_from_file = MmapedDict.read_all_values_from_file


def read_metric_file(filename: str) -> Iterator[tuple[str, float, float, int]]:
    """prometheus_client's reader of one metric file, with an empty file read as empty. The
    size is looked at first: a file once sized never shrinks, so one that is not empty now
    holds at least its header."""
    if os.path.getsize(filename) == 0:
        return iter(())
    return _read_all_values_from_file(filename)  # type: ignore[no-any-return]


def read_empty_metric_files_as_empty() -> None:
    """Make every later scrape in this process read metric files with `read_metric_file`."""
    MmapedDict.read_all_values_from_file = staticmethod(read_metric_file)  # type: ignore[method-assign,assignment]
