"""What the retrieval tests share: the check that a project holds exactly the
PACS's instances (the ``storage`` fixture is in conftest)."""

from pathlib import Path

from pulls.models import RetrievedInstance
from tests.pulls.test_engine import dataset_bytes

QUIET = {"on_progress": lambda job: None}


def assert_project_holds_exactly(project, instances, root: Path, dicom_data):
    files = sorted(p for p in (root / project.slug).rglob("*.dcm"))
    assert {p.stem for p in files} == {i.sop_instance_uid for i in instances}
    for inst in instances:
        path = (
            root
            / project.slug
            / inst.patient_id
            / inst.study_instance_uid
            / inst.series_instance_uid
        )
        placed = path / f"{inst.sop_instance_uid}.dcm"
        assert dataset_bytes(placed) == dataset_bytes(dicom_data.root / inst.path)
    assert RetrievedInstance.objects.filter(project=project).count() == len(instances)
