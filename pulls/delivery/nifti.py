"""NIfTI beside DICOM: each retrieved series converted by dcm2niix (Debian
package ``dcm2niix``) with its JSON sidecar, into ``nifti/`` of the project's
folder mirroring the DICOM layout (``nifti/PatientID/Study/Series/series.nii.gz``).

dcm2niix reads the files as the project holds them (a pseudonymised project's
pseudonymised files; its sidecar is written anonymised, ``-ba y``). It writes
into a fresh folder that is moved into place when it has finished: nothing
half-written is ever in ``nifti/``. File names are fixed (``series``, with the
suffixes dcm2niix adds for echoes or phases), never taken from a tag value.
A series it does not convert (not an image; a localizer, a derived or a single
2D image, which ``-i y`` leaves out) is listed with the reason, not failed.
Its output is not logged: it names the files' values.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.db.models import Count, Min, Q
from django.utils import timezone
from pydicom.uid import UID

from pulls.delivery.selection import job_selection, relative_path
from pulls.models import Job, JobKind, JobStatus, NiftiSeries, Project

DCM2NIIX = "dcm2niix"
TIMEOUT_SECONDS = 900
# A conversion queued this long ago and not done: its message was lost, queue it again.
REQUEUE_AFTER = timedelta(hours=2)
NAME = "series"


class ConverterMissing(RuntimeError):
    """dcm2niix is not installed."""


@dataclass
class Converted:
    files: list[str]
    reason: str = ""


def converter() -> str:
    found = shutil.which(DCM2NIIX)
    if not found:
        raise ConverterMissing(
            "dcm2niix is not installed: install the Debian package dcm2niix to convert to NIfTI."
        )
    return found


def _not_converted_reason(sop_class_uid: str, returncode: int) -> str:
    name = UID(sop_class_uid).name if sop_class_uid else "unknown class"
    if returncode not in (0, 2):
        return f"dcm2niix could not convert it (exit status {returncode}; {name})"
    if "Image" not in name:
        return f"not an image ({name})"
    return "a localizer, derived or single 2D image: dcm2niix leaves these out"


def convert_folder(series_dir: Path, out_dir: Path, *, sop_class_uid: str = "") -> Converted:
    """One series' folder converted into ``out_dir`` (replaced as a whole)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".converting-", dir=out_dir.parent))
    try:
        done = subprocess.run(
            [converter(), "-b", "y", "-ba", "y", "-z", "y", "-i", "y", "-w", "1", "-d", "0",
             "-f", NAME, "-o", str(work), str(series_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )  # fmt: skip
        files = sorted(p.name for p in work.iterdir() if p.is_file())
        if not any(name.endswith((".nii", ".nii.gz")) for name in files):
            return Converted([], _not_converted_reason(sop_class_uid, done.returncode))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
        return Converted(files)
    except subprocess.TimeoutExpired:
        return Converted([], f"dcm2niix took longer than {TIMEOUT_SECONDS} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convert_series(project: Project, instances, *, job: Job | None = None) -> dict[str, int]:
    """Every series of these instances (a RetrievedInstance queryset) converted,
    each recorded as a NiftiSeries; series converted before are done again."""
    root = project.storage_dir
    counts = {"converted": 0, "not_converted": 0}
    series = (
        instances.values("series_instance_uid")
        .annotate(path=Min("path"), sop_class=Min("sop_class_uid"), n=Count("pk"))
        .order_by("path")
    )
    for one in series:
        path = relative_path(one["path"])
        if path is None:
            continue
        folder = PurePosixPath(path).parent
        result = convert_folder(
            root / folder, root / "nifti" / folder, sop_class_uid=one["sop_class"]
        )
        NiftiSeries.objects.update_or_create(
            project=project,
            series_instance_uid=one["series_instance_uid"],
            defaults={
                "job": job,
                "folder": str(folder),
                "files": "\n".join(result.files),
                "reason": result.reason,
            },
        )
        counts["not_converted" if result.reason else "converted"] += 1
    return counts


def convert_job(job: Job) -> dict[str, int]:
    """A finished retrieval job's series (the Celery task and ``move --nifti``)."""
    counts = convert_series(job.project, job_selection(job), job=job)
    Job.objects.filter(pk=job.pk).update(nifti_converted_at=timezone.now())
    return counts


def jobs_due(now=None):
    """Ended retrieval jobs of projects that ask for NIfTI, not converted, not
    queued for it (or queued so long ago that the message was lost)."""
    now = now or timezone.now()
    return Job.objects.filter(
        Q(nifti_queued_at__isnull=True) | Q(nifti_queued_at__lt=now - REQUEUE_AFTER),
        project__nifti=True,
        status__in=[JobStatus.DONE, JobStatus.FAILED],
        nifti_converted_at__isnull=True,
        files_deleted_at__isnull=True,
    ).exclude(kind=JobKind.FIND)


def queue_due(enqueue) -> int:
    """Queue the conversions due (the reconciler): ``enqueue(job_id)`` sends one."""
    queued = 0
    for job_id in jobs_due().values_list("pk", flat=True)[:100]:
        if Job.objects.filter(pk=job_id).update(nifti_queued_at=timezone.now()):
            enqueue(job_id)
            queued += 1
    return queued


def write_nifti_list(job: Job, path: Path) -> Path:
    """The job's series and what became of each: ``folder, files, reason`` (CSV)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["folder", "files", "reason"])
        for one in job.nifti_series.order_by("folder"):
            writer.writerow([one.folder, " ".join(one.files.split()), one.reason])
    return path
