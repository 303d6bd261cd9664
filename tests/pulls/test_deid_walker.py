"""The de-identification of a data set's bytes (pulls.deid), on data sets built
to hold what the walk must get right: sequences of defined and undefined
length in every encoding, references, dates, private blocks, the options."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pulls.deid.files import BurnedIn, Pseudonymiser, burned_in_reason
from pulls.deid.keys import Keys
from pulls.deid.profile import Options

SECRET = bytes(range(32))
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY, SERIES, SOP = (
    "1.2.826.0.1.3680043.8.498.1",
    "1.2.826.0.1.3680043.8.498.2",
    "1.2.826.0.1.3680043.8.498.3",
)
FRAME = "1.2.826.0.1.3680043.8.498.4"
OTHER_SOP = "1.2.826.0.1.3680043.8.498.5"


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = SOP
    ds.StudyDate = "20240115"
    ds.ContentDate = "20240116"
    ds.AcquisitionDateTime = "20240115103000.5"
    ds.StudyTime = "103000"
    ds.AccessionNumber = "ACC12345"
    ds.Modality = "CT"
    ds.InstitutionName = "Hôpital Exemple"
    ds.InstitutionAddress = "1 rue de la Paix, Paris"
    ds.ReferringPhysicianName = "Weiss^Anna"
    ds.StationName = "CT-ROOM-3"
    ds.StudyDescription = "CT thorax Dupont"
    ds.SeriesDescription = "axial"
    ds.PatientName = "Dupont^Jean"
    ds.PatientID = "PAT-0042"
    ds.PatientBirthDate = "19561204"
    ds.PatientSex = "M"
    ds.PatientAge = "067Y"
    ds.OtherPatientIDs = "OLD-42"
    ds.DeviceSerialNumber = "SN-778899"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.FrameOfReferenceUID = FRAME
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    ref.ReferencedSOPInstanceUID = OTHER_SOP
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = OTHER_SOP
    inner.OperatorsName = "Martin^Paul"
    ref.ReferencedImageSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")  # creator of block 0x10 of group 0009
    ds.add_new(0x00091010, "LO", "ACME 1.0")
    ds.add_new(0x00091011, "LO", "ACME 1.0 DLP")
    ds.add_new(0x00091011, "LO", "ACME")
    ds.add_new(0x00091110, "LO", "Dupont's private note")
    ds.add_new(0x00E10010, "LO", "ELSCINT1")  # a safe private attribute (Table E.3.10-1)
    ds.add_new(0x00E11021, "DS", "123.4")
    ds.add_new(0x00E11022, "LO", "Jean Dupont")  # not safe
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 2, 16, 12, 11
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    return ds


def _file(ds: Dataset, syntax) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian,
               implicit_vr=syntax == ImplicitVRLittleEndian)  # fmt: skip
    return buffer.getvalue()


DEFAULT = Options()


def _deidentify(tmp_path, syntax=ExplicitVRLittleEndian, options=DEFAULT, ds=None, **kwargs):
    source = tmp_path / "in.dcm"
    source.write_bytes(_file(ds or _dataset(), syntax))
    out = tmp_path / "out"
    done = Pseudonymiser(SECRET, options, **kwargs).place_file(source, str(out))
    return done, dcmread(out / done.relative)


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian]  # fmt: skip


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit", "big", "deflated"])
def test_a_data_set_comes_out_pseudonymised_in_its_own_encoding(tmp_path, syntax):
    done, ds = _deidentify(tmp_path, syntax)
    keys = Keys(SECRET)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.PatientID == ds.PatientName == keys.patient_id("PAT-0042")
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == keys.uid(SOP)
    assert ds.StudyInstanceUID == keys.uid(STUDY) and ds.FrameOfReferenceUID == keys.uid(FRAME)
    assert ds.SOPClassUID == CT  # standard UIDs stay
    # References, at every depth, point where the referenced instance now is.
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == keys.uid(OTHER_SOP)
    inner = ds.ReferencedImageSequence[0].ReferencedImageSequence[0]
    assert inner.ReferencedSOPInstanceUID == keys.uid(OTHER_SOP)
    assert "Martin" not in str(inner.get("OperatorsName", ""))
    # Dates move back by the patient's shift, times stay; the interval is kept.
    shift = keys.shift_days("PAT-0042")
    assert shift % 7 == 0 and shift >= 7
    from datetime import date, timedelta

    assert ds.StudyDate == (date(2024, 1, 15) - timedelta(days=shift)).strftime("%Y%m%d")
    assert ds.ContentDate == (date(2024, 1, 16) - timedelta(days=shift)).strftime("%Y%m%d")
    assert ds.AcquisitionDateTime == ds.StudyDate + "103000.5"
    assert ds.StudyTime == "103000"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    # What identifies goes; descriptions stay, cleaned of the patient's name.
    for gone in ("PatientBirthDate", "InstitutionAddress", "OtherPatientIDs", "PatientSex",
                 "PatientAge"):  # fmt: skip
        assert not ds.get(gone), gone
    assert ds.DeviceSerialNumber == "ANONYMIZED"  # X/Z/D: a dummy where an IOD needs one
    assert ds.AccessionNumber == keys.accession("ACC12345")
    assert ds.InstitutionName != "Hôpital Exemple" and ds.ReferringPhysicianName == ""
    assert ds.StudyDescription == "CT thorax"
    assert ds.SeriesDescription == "axial"
    # Private attributes go (no option retains them).
    assert not [e for e in ds if e.tag.is_private]
    # Pixels untouched; the method named.
    assert ds.PixelData == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert ds.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
        "113100", "113107", "113105"
    ]  # fmt: skip
    assert done.source["PatientID"] == "PAT-0042" and done.shift_days == shift


def test_each_option_keeps_what_it_says(tmp_path):
    options = Options(
        retain_dates=False, retain_patient_characteristics=True, retain_device_identity=True,
        retain_institution_identity=True, clean_descriptors=False, retain_safe_private=True,
    )  # fmt: skip
    _, ds = _deidentify(tmp_path, options=options)
    assert (ds.PatientSex, ds.PatientAge) == ("M", "067Y")
    assert (ds.StationName, ds.DeviceSerialNumber) == ("CT-ROOM-3", "SN-778899")
    assert ds.InstitutionName == "Hôpital Exemple"
    # No dates option: Z emptied, Z/D a dummy date, nothing of the original.
    assert ds.StudyDate == "" and ds.ContentDate == "19000101"
    assert "StudyDescription" not in ds
    private = {e.tag: e.value for e in ds if e.tag.is_private}
    assert private == {0x00E10010: "ELSCINT1", 0x00E11021: "123.4"}
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
        "113100", "113111", "113109", "113112", "113108"
    ]  # fmt: skip
    assert "LongitudinalTemporalInformationModified" not in ds


def test_the_same_patient_gets_the_same_values_with_the_same_key_and_others_with_another():
    one, again, other = Keys(SECRET), Keys(SECRET), Keys(b"another key of the same length!!")
    for method in ("patient_id", "uid", "accession", "shift_days"):
        value = "1.2.3.4" if method == "uid" else "PAT-0042"
        assert getattr(one, method)(value) == getattr(again, method)(value)
        assert getattr(one, method)(value) != getattr(other, method)(value)
    assert Keys(SECRET, given={"PAT-0042": "LUNG-007"}).patient_id("PAT-0042") == "LUNG-007"
    uid = one.uid("1.2.3.4")
    assert uid.startswith("2.25.") and len(uid) <= 64 and int(uid[5:]) < 2**128


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"BurnedInAnnotation": b"YES"}, "BurnedInAnnotation is YES"),
        ({"SOPClassUID": b"1.2.840.10008.5.1.4.1.1.7"}, "secondary capture"),
        ({"Modality": b"US"}, "ultrasound"),
        ({"SOPClassUID": b"1.2.840.10008.5.1.4.1.1.104.1"}, "PDF"),
        ({"SOPClassUID": b"1.2.840.10008.5.1.4.1.1.7", "BurnedInAnnotation": b"NO"}, None),
        ({"SOPClassUID": CT.encode(), "Modality": b"CT"}, None),
    ],
)
def test_what_may_show_burned_in_text(attributes, expected):
    reason = burned_in_reason(attributes)
    assert (reason is None) if expected is None else (expected in reason)


def test_an_instance_that_may_show_burned_in_text_is_refused_unless_kept(tmp_path):
    ds = _dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(BurnedIn, match="BurnedInAnnotation is YES"):
        _deidentify(tmp_path, ds=ds)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.dcm"))
    done, kept = _deidentify(tmp_path, ds=_dataset_with_burned_in(), keep_burned_in=True)
    assert "BurnedInAnnotation is YES" in done.burned_in and kept.BurnedInAnnotation == "YES"


def _dataset_with_burned_in() -> Dataset:
    ds = _dataset()
    ds.BurnedInAnnotation = "YES"
    return ds


def test_undefined_length_sequences_and_items_are_walked(tmp_path):
    """pydicom writes defined lengths; an archive's undefined ones are written
    here by hand (the output always has undefined lengths)."""
    ds = _dataset()
    source = _file(ds, ExplicitVRLittleEndian)
    done, out = _deidentify(tmp_path, ExplicitVRLittleEndian)
    # Rewrite the output (undefined lengths) through the walker once more: the
    # second pass reads what the first wrote.
    again = Pseudonymiser(b"x" * 32, Options()).place_file(tmp_path / "out" / done.relative,
                                                          str(tmp_path / "again"))  # fmt: skip
    twice = dcmread(tmp_path / "again" / again.relative)
    inner = twice.ReferencedImageSequence[0].ReferencedImageSequence[0]
    assert inner.ReferencedSOPInstanceUID == Keys(b"x" * 32).uid(Keys(SECRET).uid(OTHER_SOP))
    assert len(source) > 0


def test_a_big_file_is_memory_mapped_and_comes_out_the_same(tmp_path, monkeypatch, corpus):
    """Files beyond a size are walked through a memory map, not read whole: the
    same output, byte for byte, for every object of the corpus."""
    from pulls.deid import files

    read = Pseudonymiser(SECRET, Options(), keep_burned_in=True)
    outputs = {}
    for path in corpus.files():
        done = read.place_file(path, str(tmp_path / "read"))
        outputs[done.relative] = (tmp_path / "read" / done.relative).read_bytes()
    monkeypatch.setattr(files, "_READ_WHOLE", 0)
    for path in corpus.files():
        done = read.place_file(path, str(tmp_path / "mapped"))
        assert (tmp_path / "mapped" / done.relative).read_bytes() == outputs[done.relative]
