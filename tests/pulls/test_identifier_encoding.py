"""Identifiers are sent as pydicom would encode them, byte for byte.

encode_identifier writes the common identifiers itself (see pulls.dicom.encoding);
every identifier here is compared with pynetdicom's encoding of the same data
set, in both little-endian transfer syntaxes, and the common ones must take the
direct path (else the work it saves is silently lost).
"""

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from pulls.dicom.encoding import _direct, encode_identifier
from pulls.dicom.identifiers import (
    IdentifierError,
    find_row,
    identifier_from_row,
    retrieve_identifier,
)

STUDY = "1.2.826.0.1.3680043.8.498.74220026209153911848474467411927991371"
SERIES = "1.2.826.0.1.3680043.8.498.1372073057513151329042545609820184105"  # odd length

# What retrievals and finds send: UIDs of odd and even length, a patient root
# row, return keys (empty), dates and date ranges, times, wildcards.
COMMON_ROWS = [
    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDY},
    {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES},
    {"QueryRetrieveLevel": "STUDY", "PatientID": "PNP31001", "StudyInstanceUID": STUDY},
    {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES,
     "SOPInstanceUID": "1.2.3.4.5"},
    find_row({"QueryRetrieveLevel": "STUDY", "PatientID": "AB1*", "StudyDate": "20240101-"}),
    find_row({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": STUDY, "Modality": "CT"}),
    find_row({"QueryRetrieveLevel": "STUDY", "AccessionNumber": "A12345",
              "StudyDate": "20240101-20241231", "StudyTime": "0800-1730"}),
    {"QueryRetrieveLevel": "PATIENT", "PatientID": "odd"},
]  # fmt: skip

TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]


def _pydicom(ds: Dataset, ts) -> bytes:
    return encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=["implicit", "explicit"])
@pytest.mark.parametrize("row", COMMON_ROWS)
def test_common_identifiers_are_written_directly_as_pydicom_would(row, ts):
    ds = identifier_from_row(row)
    assert _direct(ds, ts.is_implicit_VR) is not None, "the common case fell back to pydicom"
    assert encode_identifier(ds, ts) == _pydicom(ds, ts)


def _unusual() -> list[Dataset]:
    """Identifiers the direct path leaves to pydicom."""
    person = Dataset()
    person.QueryRetrieveLevel = "PATIENT"
    person.PatientName = "Doe^Jane"  # PN: a PersonName object
    multi = Dataset()
    multi.QueryRetrieveLevel = "SERIES"
    multi.ModalitiesInStudy = ["CT", "MR"]
    charset = Dataset()
    charset.SpecificCharacterSet = "ISO_IR 100"
    charset.QueryRetrieveLevel = "PATIENT"
    charset.PatientID = "Müller"
    number = Dataset()
    number.QueryRetrieveLevel = "STUDY"
    number.NumberOfStudyRelatedInstances = ""
    number.SeriesNumber = "12"
    nested = Dataset()
    nested.QueryRetrieveLevel = "STUDY"
    nested.ReferencedStudySequence = [Dataset()]
    return [person, multi, charset, number, nested]


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=["implicit", "explicit"])
@pytest.mark.parametrize("ds", _unusual(), ids=["PN", "multi", "charset", "IS", "SQ"])
def test_other_identifiers_are_left_to_pydicom(ds, ts):
    assert _direct(ds, ts.is_implicit_VR) is None
    assert encode_identifier(ds, ts) == _pydicom(ds, ts)


def test_big_endian_is_left_to_pydicom():
    ds = identifier_from_row(COMMON_ROWS[1])
    encoded = encode_identifier(ds, ExplicitVRBigEndian)
    assert encoded == _pydicom(ds, ExplicitVRBigEndian)
    assert encoded != encode_identifier(ds, ExplicitVRLittleEndian)


# A retrieval row as stored (only its UIDs are sent), the model, and the
# identifier the general path makes of its unique keys.
RETRIEVALS = [
    ({"StudyInstanceUID": STUDY, "PatientName": "*"}, "S", COMMON_ROWS[0]),
    ({"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}, "S", COMMON_ROWS[1]),
    (
        {"PatientID": "PNP31001", "StudyInstanceUID": STUDY, "StudyDate": "20240101"},
        "P",
        COMMON_ROWS[2],
    ),
    ({"StudyInstanceUID": f" {STUDY} "}, "S", COMMON_ROWS[0]),  # spaces: the general path
]


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=["implicit", "explicit"])
@pytest.mark.parametrize("row, model, general", RETRIEVALS)
def test_a_retrieval_sends_its_unique_keys_as_the_general_path_writes_them(row, model, general, ts):
    sent = encode_identifier(retrieve_identifier(row, model=model), ts)
    assert (
        sent
        == encode_identifier(identifier_from_row(general), ts)
        == _pydicom(identifier_from_row(general), ts)
    )


@pytest.mark.parametrize("uid", ["1.02.3", "1.2.", "1.2.3a", "1" * 65, "1.2.3\\04"], ids=repr)
def test_a_retrieval_with_a_value_that_is_no_uid_is_refused_naming_the_key(uid):
    with pytest.raises(IdentifierError) as refused:
        retrieve_identifier({"StudyInstanceUID": uid}, model="S")
    assert str(refused.value).startswith("StudyInstanceUID:")
