"""File names from tag values: only plain UIDs and names pass; anything else is hashed."""

import pytest

from pulls.dicom.paths import layout_relpath, safe_component, safe_name


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.2", "1", "1." + "2" * 62])
def test_a_plain_uid_is_its_own_file_name(uid):
    assert safe_component(uid) == uid


@pytest.mark.parametrize(
    "hostile",
    ["../../etc", "1.2/3", "..", ".", "", "1.2.3\n", "1.2.3 ", "1" * 65, "１.２", "1.2\x00"],
)
def test_anything_else_becomes_a_hash(hostile):
    name = safe_component(hostile)
    assert name.startswith("x") and len(name) == 33
    assert name == safe_component(hostile)  # the same value, the same folder


@pytest.mark.parametrize("hostile", ["../x", "a/b", ".", "..", "PAT\n", "-rf", " PAT", "P" * 65])
def test_a_patient_id_that_is_no_plain_name_is_hashed(hostile):
    assert safe_name(hostile).startswith("x") and "/" not in safe_name(hostile)


def test_the_layout_is_built_from_safe_parts_only():
    keys = {
        "PatientID": "../../root",
        "StudyInstanceUID": "1.2.3",
        "SeriesInstanceUID": "1.2.3.4\n",
        "SOPInstanceUID": "1.2.3.4.5",
    }
    patient, study, series, instance = layout_relpath(keys).split("/")
    assert patient.startswith("x") and series.startswith("x")
    assert (study, instance) == ("1.2.3", "1.2.3.4.5.dcm")
