"""What the benchmarks without a PACS start from: an empty instance folder with
a migrated database, and a user who owns a project and may use a node (the
node's address leads nowhere: nothing is sent to it)."""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_database(work: Path) -> None:
    """Delete ``work``, make its instance folder, set Django up and migrate
    (the settings take the folder from PACSNPULL_INSTANCE_DIR)."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "instance").mkdir(parents=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def owner_project_node() -> tuple:
    """The user "bench", owner of the project "bench", granted the node BENCH."""
    from accounts.models import User
    from pulls.models import Membership, PacsNode, Project, Role

    owner = User.objects.create_user("bench", may_pull_identifiable=True)
    project = Project.objects.create(name="Bench", slug="bench", deidentification="identifiable")
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    node = PacsNode.objects.create(name="BENCH", ae_title="PACS", host="127.0.0.1", port=104)
    node.granted_users.add(owner)
    return owner, project, node


def project_with_files(project, instances: int, *, size: int):
    """Synthetic files in the project's folder, recorded as retrieved: a study
    of 4 series of 20 instances per patient (pulls.sandbox.synthetic)."""
    from pulls.models import RetrievedInstance
    from pulls.sandbox.synthetic import generate

    made = generate(
        project.storage_dir, patients=max(1, instances // 80), studies=1, series=4,
        instances=20, size=size,
    )  # fmt: skip
    (project.storage_dir / "manifest.csv").unlink(missing_ok=True)
    RetrievedInstance.objects.bulk_create(
        RetrievedInstance(
            project=project,
            path=i.path,
            patient_id=i.patient_id,
            study_instance_uid=i.study_instance_uid,
            series_instance_uid=i.series_instance_uid,
            sop_instance_uid=i.sop_instance_uid,
            modality=i.modality,
            size=i.size,
        )  # fmt: skip
        for i in made.instances
    )
    return made


def big_find_job(node, owner, project, manifest, count: int):
    """A find job that has ended with ``count`` rows (one in ten failed) and a
    match each, with every standard STUDY return key, values from ``manifest``."""
    from pulls.jobs.items import job_refresh_counters
    from pulls.models import FindResult, ItemStatus, Job, JobItem, JobKind, JobStatus

    job = Job.objects.create(
        kind=JobKind.FIND, owner=owner, project=project, node=node, status=JobStatus.DONE
    )
    statuses = [ItemStatus.DONE] * 9 + [ItemStatus.FAILED]
    JobItem.objects.bulk_create(
        (
            JobItem(
                job=job, row=n, identifier={"QueryRetrieveLevel": "STUDY", "PatientID": f"P{n}"},
                status=statuses[n % 10], matches=1, error_message="" if n % 10 else "timeout",
            )
            for n in range(1, count + 1)
        ),
        batch_size=5000,
    )  # fmt: skip
    instances = manifest.instances
    item_ids = list(JobItem.objects.filter(job=job).values_list("pk", flat=True))
    cycle = (instances[i % len(instances)] for i in range(count))

    def result(pk: int, inst) -> FindResult:
        return FindResult(
            job=job,
            item_id=pk,
            attributes={  # every standard STUDY return key, as a real match has
                "QueryRetrieveLevel": "STUDY",
                "PatientName": inst.patient_name,
                "PatientID": inst.patient_id,
                "PatientBirthDate": "19700101",
                "PatientSex": "O",
                "StudyDate": inst.study_date,
                "StudyTime": "101500",
                "AccessionNumber": inst.accession_number,
                "StudyDescription": inst.study_description,
                "ModalitiesInStudy": inst.modality,
                "StudyID": "1",
                "ReferringPhysicianName": "REFERRER^ANNA",
                "StudyInstanceUID": inst.study_instance_uid,
                "NumberOfStudyRelatedSeries": "2",
                "NumberOfStudyRelatedInstances": "6",
                "SOPClassesInStudy": inst.sop_class_uid,
                "Modality": inst.modality,
            },
            patient_id=inst.patient_id,
            study_instance_uid=inst.study_instance_uid,
            modality=inst.modality,
            accession_number=inst.accession_number,
            study_date=f"{inst.study_date[:4]}-{inst.study_date[4:6]}-{inst.study_date[6:]}",
            study_description=inst.study_description,
        )

    FindResult.objects.bulk_create(
        (result(pk, inst) for pk, inst in zip(item_ids, cycle, strict=True)), batch_size=5000
    )
    job_refresh_counters(job.pk)
    return job
