"""A project's instance records: what the row finisher writes of each
instance placed, and what the manifest lists of them, whatever their values."""

import csv
import io

from django.db import transaction

from pulls.dicom.receiving import Placed
from pulls.models import RetrievedInstance
from pulls.retrieval.manifests import COLUMNS, manifest_chunks
from pulls.retrieval.records import InstanceRecords, record_instances, save_together
from tests.conftest import make_node, retrieval_job


def test_the_manifest_shows_the_keys_as_the_pacs_wrote_them_whatever_their_characters(
    alice, project
):
    """A row's records go to the database in one statement (arrays on
    PostgreSQL): values with quotes, commas, braces, backslashes, tabs, accents
    or the word NULL come back in the manifest as they were."""
    study = "1.2.826.0.1.3680043.8.498.77"
    odd = ['a,b"c{d}\\e', "NULL", "", "'; DROP TABLE x; --", "{}", "tab\there ü 中"]
    placed = [
        Placed(
            path=f"P{n}/{study}/{study}.1/{study}.1.{n}.dcm",
            patient_id=value,
            study_instance_uid=study,
            series_instance_uid=f"{study}.1",
            sop_instance_uid=f"{study}.1.{n}",
            modality=value[:16],
            size=100 + n,
        )
        for n, value in enumerate(odd)
    ]
    with transaction.atomic():
        record_instances(project, placed)
    node = make_node("NOWHERE", 9, "NOWHERE")
    node.granted_users.add(alice)
    job = retrieval_job(alice, project, node, [study], kind="get")
    lines = list(csv.reader(io.StringIO("".join(manifest_chunks(job)))))
    assert lines[0] == COLUMNS
    assert sorted(lines[1:]) == sorted(
        [*p[:6], str(p.size), p.sop_class_uid, p.transfer_syntax, p.burned_in] for p in placed
    )


def test_rows_recorded_together_leave_one_record_of_an_instance_both_placed(project):
    """The row finisher records a batch of rows' instances in one statement
    (save_together; arrays on PostgreSQL, which may not upsert a row twice):
    an instance that two of them placed (a study's row and its series' row)
    is recorded once, where the later row placed it."""
    study = "1.2.826.0.1.3680043.8.498.78"

    def placed(sop: str, folder: str, size: int) -> Placed:
        return Placed(
            path=f"{folder}/{study}/{study}.1/{sop}.dcm",
            patient_id=folder,
            study_instance_uid=study,
            series_instance_uid=f"{study}.1",
            sop_instance_uid=sop,
            modality="CT",
            size=size,
        )

    study_row = [placed(f"{study}.1.1", "P1", 100), placed(f"{study}.1.2", "P1", 101)]
    series_row = [placed(f"{study}.1.1", "P2", 200)]
    with transaction.atomic():
        save_together([InstanceRecords(project, study_row), InstanceRecords(project, series_row)])
    records = RetrievedInstance.objects.filter(project=project)
    recorded = {r.sop_instance_uid: (r.path, r.size) for r in records}
    assert recorded == {
        f"{study}.1.1": (series_row[0].path, 200),
        f"{study}.1.2": (study_row[1].path, 101),
    }
