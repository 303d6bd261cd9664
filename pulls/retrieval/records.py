"""A project's instance records: each instance on disk in its storage, once.

What retrieval reads before a transfer (what the project holds of a study,
still on disk) and writes after it (the instances placed), and what the
manifests list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from pulls.deid.mapping import record_mapping
from pulls.deid.projects import uid_in
from pulls.dicom.receiving import Placed
from pulls.models import Project, RetrievedInstance


@dataclass(frozen=True)
class Present:
    """What a project holds of some studies, still on disk: (SOP Instance UID,
    series) by study. Studies are keyed by the PACS's UIDs; instances and series
    are as the project names them (the same UIDs, or a pseudonymised project's
    replacements, ``named``)."""

    by_study: dict[str, list[tuple[str, str]]]
    named: Callable[[str], str] = str

    def of_row(self, study: str | None, series: str | None) -> set[str]:
        """SOP Instance UIDs (as the project names them) of a row's study or series."""
        wanted = self.named(series) if series else None
        rows = self.by_study.get(study or "", ())
        return {sop for sop, its in rows if not wanted or its == wanted}


# What the project holds of some studies (completed by a list of UIDs, ``%s``
# each, at most _UIDS_AT_ONCE at a time); built from the model's names only.
_PRESENT = (
    "SELECT study_instance_uid, sop_instance_uid, series_instance_uid, path "  # noqa: S608
    f"FROM {RetrievedInstance._meta.db_table} WHERE project_id = %s AND study_instance_uid IN "
)
_UIDS_AT_ONCE = 500


def present_by_study(project: Project, studies: set[str]) -> Present:
    """What the project holds of ``studies``: one query however many studies."""
    named = uid_in(project)
    asked = {named(uid): uid for uid in studies if uid}
    found: dict[str, list[tuple[str, str]]] = {}
    if not asked:
        return Present(found, named)
    root = str(project.storage_dir)
    uids = list(asked)
    with connection.cursor() as cursor:
        # A raw read: it runs for every batch of rows a worker takes, where the
        # ORM's compiling of the query cost more than the query (cProfile).
        for start in range(0, len(uids), _UIDS_AT_ONCE):
            part = uids[start : start + _UIDS_AT_ONCE]
            cursor.execute(f"{_PRESENT}({', '.join(['%s'] * len(part))})", [project.pk, *part])
            for study, sop, series, path in cursor.fetchall():
                if os.path.isfile(f"{root}/{path}"):
                    found.setdefault(asked[study], []).append((sop, series))
    return Present(found, named)


def present_sops(project: Project, study: str, series: str | None) -> set[str]:
    """SOP Instance UIDs of the study (series) recorded in the project and still on disk."""
    return present_by_study(project, {study}).of_row(study, series)


def present_count(project: Project, study: str, series: str | None) -> int:
    return len(present_sops(project, study, series))


_COLUMNS = (
    "project_id", "path", "patient_id", "study_instance_uid", "series_instance_uid",
    "sop_instance_uid", "modality", "size", "sop_class_uid", "transfer_syntax", "burned_in",
    "placed_at",
)  # fmt: skip
# Built from constants only (table and column names); values are parameters.
_TABLE = RetrievedInstance._meta.db_table
_ON_CONFLICT = "ON CONFLICT (project_id, sop_instance_uid) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("project_id", "sop_instance_uid")
)
# SQLite: one upsert per instance, sent with executemany (in C, in process):
# Django's bulk_create with update_conflicts builds model objects and compiles
# SQL per batch, which cost a sixth of a C-GET job's time on 30-instance
# studies (cProfile).
_UPSERT = (
    f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) {_ON_CONFLICT}"
)
# PostgreSQL: psycopg sends an executemany's rows as statements of their own
# (a C-GET job of 1,500 instances made 1,500, each parsed and planned by the
# server): there a row's instances go as one array per column, in one statement.
_UPSERT_ARRAYS = (
    f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) "  # noqa: S608
    "SELECT %s, u.*, %s FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], "
    "%s::varchar[], %s::varchar[], %s::varchar[], %s::bigint[], %s::varchar[], %s::varchar[], "
    "%s::varchar[]) AS u(path, patient_id, study, series, sop, modality, size, sop_class, syntax, "
    f"burned_in) {_ON_CONFLICT}"
)


def record_instances(project: Project, placed: list[Placed]) -> None:
    """Record placed instances (one row per instance per project). An instance
    named twice (two rows of a batch that retrieved it) is recorded as the
    last one placed it: one statement may not upsert a row twice."""
    pseudonymised = any(item.source_study_uid for item in placed)
    # Set aside (withheld): not in the project.
    placed = list({item.sop_instance_uid: item for item in placed if not item.withheld}.values())
    if not placed:
        return
    now = timezone.now()
    rows = [
        (
            str(item.path), item.patient_id[:64], item.study_instance_uid[:64],
            item.series_instance_uid[:64], item.sop_instance_uid[:64], item.modality[:16],
            item.size, item.sop_class_uid[:64], item.transfer_syntax[:64], item.burned_in[:200],
        )
        for item in placed
    ]  # fmt: skip
    # In the outcome's transaction when there is one (no savepoint), else its own.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if pseudonymised:
            record_mapping(project, placed)
        if connection.vendor == "postgresql":
            cursor.execute(_UPSERT_ARRAYS, [project.pk, now, *map(list, zip(*rows, strict=True))])
        else:
            cursor.executemany(_UPSERT, [(project.pk, *row, now) for row in rows])


@dataclass(frozen=True)
class InstanceRecords:
    """A row's placed instances, recorded with its outcome (``Outcome.save``);
    the rows that a RowFinisher writes together record theirs in one
    statement (``save_together``)."""

    project: Project
    placed: list[Placed]

    def __call__(self) -> None:
        record_instances(self.project, self.placed)


def save_together(saves: Iterable[Callable[[], None]]) -> None:
    """Run rows' saves in order, the InstanceRecords of one project that
    follow each other as one record_instances: a statement for a batch of 50
    one-instance rows instead of 50 (~35 µs a row of the row finisher's ~100,
    measured on SQLite)."""
    joined: InstanceRecords | None = None
    for save in saves:
        if isinstance(save, InstanceRecords):
            if joined is not None and joined.project.pk == save.project.pk:
                joined = InstanceRecords(joined.project, [*joined.placed, *save.placed])
                continue
            if joined is not None:
                joined()
            joined = save
            continue
        if joined is not None:
            joined()
            joined = None
        save()
    if joined is not None:
        joined()
