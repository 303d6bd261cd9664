"""Query rows become identifiers only when DICOM would accept every key."""

import pytest

from pulls.dicom.identifiers import check_value, identifier_from_row, row_errors


def _errors(**row) -> list[str]:
    return [str(e) for e in row_errors(row)]


def test_a_good_row_becomes_an_identifier_with_return_keys():
    ds = identifier_from_row(
        {
            "QueryRetrieveLevel": "study",
            "PatientID": "PNP01",
            "StudyDate": "20200101-20201231",
            "StudyInstanceUID": "",
            "ModalitiesInStudy": "*",
            "PatientName": "Mül*",
        }
    )
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.StudyDate == "20200101-20201231"
    assert ds.StudyInstanceUID == ""
    assert ds.ModalitiesInStudy == ""
    assert ds.PatientName == "Mül*"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"StudyDate": "20200101"}, "QueryRetrieveLevel: is missing"),
        ({"QueryRetrieveLevel": "SERIESS"}, "QueryRetrieveLevel: must be one of"),
        ({"QueryRetrieveLevel": "STUDY", "PatientId": "1"}, "PatientId: is not a DICOM keyword"),
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-01-31"}, "DICOM writes it 20200131"),
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "20200230"}, "'20200230' is not a date"),
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "20201231-20200101"}, "swap the two"),
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2020*"}, "wildcards (* or ?) are not"),
        ({"QueryRetrieveLevel": "STUDY", "StudyTime": "2561"}, "'2561' is not a time"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"}, "wildcards"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.02.3"}, "is not a UID"),
        ({"QueryRetrieveLevel": "STUDY", "Modality": "ct"}, "write 'CT'"),
        ({"QueryRetrieveLevel": "STUDY", "AccessionNumber": "A" * 17}, "at most 16"),
        ({"QueryRetrieveLevel": "STUDY", "PatientAge": "45"}, "is not an age"),
        ({"QueryRetrieveLevel": "STUDY", "ReferencedStudySequence": "x"}, "sequences cannot"),
        ({"QueryRetrieveLevel": "STUDY", "PatientID": "a\\b"}, "only allowed for UIDs"),
    ],
)
def test_it_names_the_key_and_the_fix(row, expected):
    errors = [str(e) for e in row_errors(row)]
    assert any(expected in e for e in errors), errors


def test_uid_lists_and_open_ranges_are_allowed():
    assert _errors(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3\\1.2.4") == []
    assert _errors(QueryRetrieveLevel="STUDY", StudyDate="-20201231") == []
    assert _errors(QueryRetrieveLevel="STUDY", StudyDate="20200101-") == []
    assert _errors(QueryRetrieveLevel="STUDY", AcquisitionDateTime="20200101120000-0500") == []


def test_every_error_of_a_row_is_listed():
    errors = row_errors({"StudyDate": "bad", "Nonsense": "1"})
    assert {e.key for e in errors} == {"QueryRetrieveLevel", "StudyDate", "Nonsense"}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2020-12-01", "'2020-12-01' looks like an ISO date: DICOM writes it 20201201"),
        ("2020-13-45", "'2020-13-45' is written like an ISO date, and '20201345' is not a date"),
    ],
)
def test_an_iso_date_is_translated_only_when_it_is_a_date(value, says):
    assert check_value("StudyDate", "DA", value).startswith(says)
