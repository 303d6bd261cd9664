"""A ZIP of a project's files, streamed as it is read (zipstream-ng).

Nothing is copied to disk and memory stays flat: files are added to the stream a
batch of records at a time and read in 64 KB pieces; entries are stored (DICOM
pixel data is compressed already, or compresses poorly) and ZIP64 is used where
an entry or the archive passes 4 GB. Inside: the project's layout under one
folder, ``manifest.csv`` of what the ZIP holds, the NIfTI files of its series
where the project converts them, and ``missing.csv`` when a recorded file was no
longer on disk.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.db.models import QuerySet
from zipstream import ZipStream

from pulls.delivery.selection import in_batches, relative_path
from pulls.models import NiftiSeries, Project, RetrievedInstance
from pulls.retrieval.manifests import instances_csv


def zip_chunks(
    project: Project, instances: QuerySet[RetrievedInstance], folder: str
) -> Iterator[bytes]:
    """The bytes of the ZIP of ``instances`` (of ``project``), under ``folder``/."""
    stream = ZipStream(sized=False)
    root = project.storage_dir
    missing: list[str] = []
    series: set[str] = set()
    for batch in in_batches(instances):
        for instance in batch:
            path = relative_path(instance.path)
            if path is None or not (root / path).is_file():
                missing.append(instance.path)
                continue
            series.add(instance.series_instance_uid)
            stream.add_path(str(root / path), f"{folder}/{path}")
        yield from stream.all_files()
    for converted in NiftiSeries.objects.filter(project=project, reason="").iterator():
        if converted.series_instance_uid not in series:
            continue
        for name in converted.files.split():
            path = relative_path(f"nifti/{converted.folder}/{name}")
            if path is not None and (root / path).is_file():
                stream.add_path(str(root / path), f"{folder}/{path}")
        yield from stream.all_files()
    stream.add((chunk.encode() for chunk in instances_csv(instances)), f"{folder}/manifest.csv")
    if missing:
        stream.add(_missing_csv(missing), f"{folder}/missing.csv")
    yield from stream.finalize()


def _missing_csv(paths: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "why"])
    for path in paths:
        writer.writerow([path, "recorded, but no longer in the project's folder"])
    return buffer.getvalue().encode()
