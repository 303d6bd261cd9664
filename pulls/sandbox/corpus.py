"""A corpus that looks like a clinical archive, not like our own clean data.

Deterministic by seed. Besides uncompressed 16-bit CT it holds:

- thirteen transfer syntaxes: implicit and explicit VR little endian, explicit
  big endian, deflate, JPEG baseline, extended, lossless and lossless SV1,
  JPEG-LS lossless and near-lossless, RLE, JPEG 2000 lossless and lossy;
- multi-frame objects (an ultrasound clip in JPEG baseline, a secondary
  capture in JPEG 2000, an angiography run larger than the receivers' 8 MB
  memory limit);
- non-image objects in one radiotherapy study with the CT they refer to: RT
  structure set, plan and dose, a comprehensive SR, a presentation state, a
  key object selection, an encapsulated PDF and raw data; one instance of a
  private SOP class and one of a retired one;
- odd sizes (47 x 63, 8-bit with odd pixel data length) and names and
  descriptions in twelve character sets.

Uncompressed files are written by pydicom; the compressed ones are made from
them with DCMTK's tools (``dcmconv``, ``dcmcjpeg``, ``dcmcjpls``, ``dcmcrle``,
Debian package ``dcmtk``) and, for JPEG 2000, pydicom with
``pylibjpeg-openjpeg``, as an archive would hold them.

    python -m pulls.sandbox.corpus OUT_DIR
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import shutil
import struct
import subprocess
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

from pulls.sandbox.procs import require_program

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
XA = "1.2.840.10008.5.1.4.1.1.12.1"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
KEY_OBJECT = "1.2.840.10008.5.1.4.1.1.88.59"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
# Not in any standard list: a vendor's own class, under a root of our own.
PRIVATE_CLASS = "1.3.6.1.4.1.58101.1.1.1"
# Nuclear Medicine Image Storage (Retired), PS3.6 A: still in old archives.
RETIRED_CLASS = "1.2.840.10008.5.1.4.1.1.5"

# label -> (transfer syntax, how it is made: a DCMTK command or "j2k"/"j2k-lossy")
SYNTAXES: dict[str, tuple[str, list[str] | str | None]] = {
    "explicit-le": ("1.2.840.10008.1.2.1", None),
    "implicit-le": ("1.2.840.10008.1.2", ["dcmconv", "+ti"]),
    "explicit-be": ("1.2.840.10008.1.2.2", ["dcmconv", "+tb"]),
    "deflate": ("1.2.840.10008.1.2.1.99", ["dcmconv", "+td"]),
    "jpeg-extended": ("1.2.840.10008.1.2.4.51", ["dcmcjpeg", "+ee", "+un"]),
    "jpeg-lossless": ("1.2.840.10008.1.2.4.57", ["dcmcjpeg", "+el"]),
    "jpeg-lossless-sv1": ("1.2.840.10008.1.2.4.70", ["dcmcjpeg", "+e1"]),
    "jpeg-ls-lossless": ("1.2.840.10008.1.2.4.80", ["dcmcjpls", "+el"]),
    "jpeg-ls-near-lossless": ("1.2.840.10008.1.2.4.81", ["dcmcjpls", "+en", "+un"]),
    "rle": ("1.2.840.10008.1.2.5", ["dcmcrle"]),
    "j2k-lossless": ("1.2.840.10008.1.2.4.90", "j2k"),
    "j2k-lossy": ("1.2.840.10008.1.2.4.91", "j2k-lossy"),
}
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# (SpecificCharacterSet, PatientName, StudyDescription): PS3.5 Annex H-K's
# examples where it has one.
CHARACTER_SETS: list[tuple[str, str, str]] = [
    ("ISO_IR 100", "Müller^Jürgen", "CT Schädel nativ"),
    ("ISO_IR 101", "Wąsik^Łucja", "TK głowy"),
    ("ISO_IR 144", "Иванов^Пётр", "КТ грудной клетки"),
    ("ISO_IR 126", "Παπαδόπουλος^Γιώργος", "Αξονική θώρακος"),
    ("ISO_IR 127", "قباني^لنزار", "أشعة مقطعية"),
    ("ISO_IR 138", "שרון^דבורה", "סי טי ראש"),
    ("ISO_IR 148", "Şahin^Ömer", "BT toraks"),
    ("ISO_IR 166", "สมชาย^ใจดี", "ซีทีสมอง"),
    ("ISO_IR 192", "Ødegård^Zoë=王^小东", "CT Thorax – Kontrast ✓"),
    ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "頭部CT"),
    ("ISO 2022 IR 13\\ISO 2022 IR 87", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", "ｱﾀﾏ CT"),
    ("\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "흉부 CT"),
    ("GB18030", "Wang^XiaoDong=王^小东=", "胸部CT平扫"),
]

# A minimal PDF (one page, one line of text), for the encapsulated PDF.
_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]/Contents 4 0 R"
    b"/Resources<</Font<</F1 5 0 R>>>>>>endobj\n"
    b"4 0 obj<</Length 41>>stream\nBT /F1 12 Tf 20 50 Td (Befund) Tj ET\n\nendstream endobj\n"
    b"5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@dataclass(frozen=True)
class CorpusInstance:
    path: str  # relative to the corpus folder
    label: str  # what it shows (a syntax, a class, a character set)
    patient_id: str
    patient_name: str
    character_set: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    frames: int
    size: int


@dataclass
class Corpus:
    root: Path
    instances: list[CorpusInstance]

    @property
    def studies(self) -> dict[str, list[CorpusInstance]]:
        out: dict[str, list[CorpusInstance]] = {}
        for inst in self.instances:
            out.setdefault(inst.study_instance_uid, []).append(inst)
        return out

    @property
    def transfer_syntaxes(self) -> set[str]:
        return {inst.transfer_syntax for inst in self.instances}

    @property
    def sop_classes(self) -> set[str]:
        return {inst.sop_class_uid for inst in self.instances}

    def files(self) -> list[Path]:
        return [self.root / inst.path for inst in self.instances]

    def by_sop(self) -> dict[str, CorpusInstance]:
        return {inst.sop_instance_uid: inst for inst in self.instances}

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(CorpusInstance)])
            writer.writeheader()
            for inst in self.instances:
                writer.writerow(asdict(inst))


class _Builder:
    def __init__(self, out_dir: Path, seed: int) -> None:
        self.out_dir = out_dir
        self.seed = seed
        self.rng = random.Random(seed)
        self.written: list[CorpusInstance] = []
        self.work = Path(tempfile.mkdtemp(prefix="corpus-", dir=out_dir))

    def uid(self, *parts: object) -> str:
        return generate_uid(entropy_srcs=["pacsnpull-corpus", str(self.seed), *map(str, parts)])

    # --- data sets ---------------------------------------------------------------

    def base(
        self,
        *,
        sop_class: str,
        modality: str,
        patient: dict[str, str],
        study: dict[str, str],
        series_uid: str,
        series_number: int,
        instance_number: int,
        charset: str = "ISO_IR 100",
    ) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = self.uid(series_uid, instance_number)
        ds.StudyDate = study["date"]
        ds.StudyTime = "101500"
        ds.SeriesDate = study["date"]
        ds.ContentDate = study["date"]
        ds.AccessionNumber = study["accession"]
        ds.Modality = modality
        ds.Manufacturer = "pacsnpull corpus"
        ds.InstitutionName = "Hôpital Exemple"
        ds.ReferringPhysicianName = "Weiß^Anna"
        ds.StudyDescription = study["description"]
        ds.SeriesDescription = f"{modality} {series_number}"
        ds.PatientName = patient["name"]
        ds.PatientID = patient["id"]
        ds.PatientBirthDate = "19560704"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study["uid"]
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = instance_number
        return ds

    def pixels(
        self,
        ds: Dataset,
        *,
        rows: int,
        columns: int,
        bits: int = 16,
        stored: int = 12,
        frames: int = 1,
        samples: int = 1,
    ) -> None:
        """A smooth pattern with noise (it compresses as images do)."""
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
        if samples == 3:
            ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        top = (1 << stored) - 1
        rng = self.rng
        if bits == 8:
            values = bytes(
                min(top, (x * 3 + y * 2 + f * 9 + rng.randrange(8)) % (top + 1))
                for f in range(frames)
                for y in range(rows)
                for x in range(columns)
                for _ in range(samples)
            )
            ds.PixelData = values + (b"\x00" if len(values) % 2 else b"")
        else:
            count = frames * rows * columns * samples
            ds.PixelData = struct.pack(
                f"<{count}H",
                *(
                    (x * 37 + y * 23 + f * 101 + rng.randrange(16)) & top
                    for f in range(frames)
                    for y in range(rows)
                    for x in range(columns)
                    for _ in range(samples)
                ),
            )

    def ct(self, ds: Dataset, *, rows: int = 47, columns: int = 63, slice_no: int = 1) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = self.uid(ds.StudyInstanceUID, "frame of reference")
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * slice_no]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = 2.5
        ds.PixelSpacing = [0.9, 0.9]
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.KVP = 120
        self.pixels(ds, rows=rows, columns=columns)

    # --- files -----------------------------------------------------------------

    def save(self, ds: Dataset, label: str, *, convert: list[str] | str | None = None) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        relative = Path(ds.PatientID) / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        path = self.out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if convert in ("j2k", "j2k-lossy"):
            from pydicom.uid import JPEG2000, JPEG2000Lossless

            if convert == "j2k":
                ds.compress(
                    JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False
                )
            else:
                ds.compress(
                    JPEG2000, encoding_plugin="pylibjpeg", j2k_cr=[10], generate_instance_uid=False
                )
            ds.save_as(path, enforce_file_format=True)
        elif convert:
            source = self.work / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(source, enforce_file_format=True)
            tool = require_program(convert[0], "dcmtk")
            subprocess.run([tool, *convert[1:], str(source), str(path)], check=True)
            source.unlink()
        else:
            ds.save_as(path, enforce_file_format=True)
        written = dcmread(path, stop_before_pixels=True)
        self.written.append(
            CorpusInstance(
                path=str(relative),
                label=label,
                patient_id=str(ds.PatientID),
                patient_name=str(written.PatientName),
                character_set="\\".join(written.get("SpecificCharacterSet", None) or [])
                if not isinstance(written.get("SpecificCharacterSet", ""), str)
                else str(written.get("SpecificCharacterSet", "")),
                # DCMTK gives an instance compressed lossily new UIDs (PS3.3 C.12.1.1.2)
                study_instance_uid=str(written.StudyInstanceUID),
                series_instance_uid=str(written.SeriesInstanceUID),
                sop_instance_uid=str(written.SOPInstanceUID),
                sop_class_uid=str(written.SOPClassUID),
                transfer_syntax=str(written.file_meta.TransferSyntaxUID),
                frames=int(ds.get("NumberOfFrames", 1) or 1),
                size=path.stat().st_size,
            )
        )

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _study(builder: _Builder, key: str, description: str, accession: str) -> dict[str, str]:
    rng = builder.rng
    return {
        "uid": builder.uid("study", key),
        "date": f"20{rng.randrange(15, 25)}0{rng.randrange(1, 9)}1{rng.randrange(0, 9)}",
        "accession": accession,
        "description": description,
    }


def _syntaxes_study(b: _Builder) -> None:
    """One CT series per transfer syntax (two instances each, 47 x 63, 12 bits),
    and an 8-bit secondary capture in JPEG baseline (which takes 8 bits only)."""
    patient = {"id": "CORPUS-TS", "name": "Syntax^Sammlung"}
    study = _study(b, "syntaxes", "CT Thorax verschiedene Kodierungen", "CTS0001")
    for number, (label, (_, how)) in enumerate(SYNTAXES.items(), start=1):
        series_uid = b.uid("syntax series", label)
        for i in (1, 2):
            ds = b.base(
                sop_class=CT, modality="CT", patient=patient, study=study,
                series_uid=series_uid, series_number=number, instance_number=i,
            )  # fmt: skip
            b.ct(ds, slice_no=i)
            b.save(ds, label, convert=how)
    ds = b.base(
        sop_class=SC, modality="OT", patient=patient, study=study,
        series_uid=b.uid("syntax series", "jpeg-baseline"), series_number=99, instance_number=1,
    )  # fmt: skip
    ds.ConversionType = "WSD"
    b.pixels(ds, rows=45, columns=51, bits=8, stored=8)
    b.save(ds, "jpeg-baseline", convert=["dcmcjpeg", "+eb", "+un"])


def _multiframe_study(b: _Builder) -> None:
    patient = {"id": "CORPUS-MF", "name": "Mehrbild^Mia"}
    study = _study(b, "multiframe", "US Abdomen und Angiographie", "MF0001")
    us = b.base(
        sop_class=US_MULTIFRAME, modality="US", patient=patient, study=study,
        series_uid=b.uid("mf", "us"), series_number=1, instance_number=1,
    )  # fmt: skip
    b.pixels(us, rows=48, columns=64, bits=8, stored=8, frames=10, samples=3)
    us.FrameTime = 33.3
    us.BurnedInAnnotation = "NO"
    b.save(us, "multiframe-us-jpeg-baseline", convert=["dcmcjpeg", "+eb", "+un"])
    sc = b.base(
        sop_class=SC_MULTIFRAME_WORD, modality="OT", patient=patient, study=study,
        series_uid=b.uid("mf", "sc"), series_number=2, instance_number=1,
    )  # fmt: skip
    b.pixels(sc, rows=33, columns=41, frames=12)
    b.save(sc, "multiframe-sc-j2k", convert="j2k")
    # Larger than the receivers' in-memory limit (receiving.SPILL_AT, 8 MB).
    xa = b.base(
        sop_class=XA, modality="XA", patient=patient, study=study,
        series_uid=b.uid("mf", "xa"), series_number=3, instance_number=1,
    )  # fmt: skip
    b.pixels(xa, rows=256, columns=256, bits=8, stored=8, frames=140)
    b.save(xa, "multiframe-xa-large")


def _reference(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def _radiotherapy_study(b: _Builder) -> None:
    """CT with the non-image objects that refer to it, and two odd classes."""
    patient = {"id": "CORPUS-RT", "name": "Strahl^Robert"}
    study = _study(b, "rt", "RT Planung Prostata", "RT0001")
    ct_series = b.uid("rt", "ct")
    images = []
    for i in (1, 2, 3):
        ds = b.base(
            sop_class=CT, modality="CT", patient=patient, study=study,
            series_uid=ct_series, series_number=1, instance_number=i,
        )  # fmt: skip
        b.ct(ds, rows=32, columns=32, slice_no=i)
        b.save(ds, "rt-ct")
        images.append(ds)
    frame_of_reference = images[0].FrameOfReferenceUID

    def obj(sop_class: str, modality: str, number: int, label: str) -> Dataset:
        ds = b.base(
            sop_class=sop_class, modality=modality, patient=patient, study=study,
            series_uid=b.uid("rt", label), series_number=number, instance_number=1,
        )  # fmt: skip
        return ds

    rs = obj(RT_STRUCT, "RTSTRUCT", 2, "rtstruct")
    rs.StructureSetLabel = "Prostata"
    rs.StructureSetDate = study["date"]
    contour_images = Sequence([_reference(CT, img.SOPInstanceUID) for img in images])
    series_item = Dataset()
    series_item.SeriesInstanceUID = ct_series
    series_item.ContourImageSequence = contour_images
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_item.ReferencedSOPInstanceUID = study["uid"]
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame_of_reference
    for_item.RTReferencedStudySequence = Sequence([study_item])
    rs.ReferencedFrameOfReferenceSequence = Sequence([for_item])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = frame_of_reference
    roi.ROIName = "PTV"
    roi.ROIGenerationAlgorithm = "MANUAL"
    rs.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ContourImageSequence = Sequence([_reference(CT, images[1].SOPInstanceUID)])
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 3
    contour.ContourData = [0.0, 0.0, 5.0, 10.0, 0.0, 5.0, 10.0, 10.0, 5.0]
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ContourSequence = Sequence([contour])
    rs.ROIContourSequence = Sequence([roi_contour])
    b.save(rs, "rtstruct")

    plan = obj(RT_PLAN, "RTPLAN", 3, "rtplan")
    plan.RTPlanLabel = "Plan 1"
    plan.RTPlanGeometry = "PATIENT"
    plan.FrameOfReferenceUID = frame_of_reference
    plan.ReferencedStructureSetSequence = Sequence([_reference(RT_STRUCT, rs.SOPInstanceUID)])
    b.save(plan, "rtplan", convert=["dcmconv", "+ti"])

    dose = obj(RT_DOSE, "RTDOSE", 4, "rtdose")
    dose.FrameOfReferenceUID = frame_of_reference
    dose.DoseUnits = "GY"
    dose.DoseType = "PHYSICAL"
    dose.DoseSummationType = "PLAN"
    dose.DoseGridScaling = 0.0001
    dose.GridFrameOffsetVector = [0.0, 2.5, 5.0, 7.5]
    dose.ReferencedRTPlanSequence = Sequence([_reference(RT_PLAN, plan.SOPInstanceUID)])
    dose.ImagePositionPatient = [0.0, 0.0, 0.0]
    dose.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    dose.PixelSpacing = [2.0, 2.0]
    b.pixels(dose, rows=17, columns=19, frames=4, stored=16)
    dose.FrameIncrementPointer = 0x3004000C
    b.save(dose, "rtdose")

    sr = obj(COMPREHENSIVE_SR, "SR", 5, "sr")
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    sr.CompletionFlag = "COMPLETE"
    sr.VerificationFlag = "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Befund"
    sr.ConceptNameCodeSequence = Sequence([title])
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.TextValue = "Kein Nachweis von Metastasen. Größe unverändert."
    image_item = Dataset()
    image_item.RelationshipType = "CONTAINS"
    image_item.ValueType = "IMAGE"
    image_item.ReferencedSOPSequence = Sequence([_reference(CT, images[0].SOPInstanceUID)])
    sr.ContentSequence = Sequence([text, image_item])
    evidence_series = Dataset()
    evidence_series.SeriesInstanceUID = ct_series
    evidence_series.ReferencedSOPSequence = Sequence([_reference(CT, images[0].SOPInstanceUID)])
    evidence = Dataset()
    evidence.StudyInstanceUID = study["uid"]
    evidence.ReferencedSeriesSequence = Sequence([evidence_series])
    sr.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    b.save(sr, "sr")

    pr = obj(GSPS, "PR", 6, "pr")
    pr.ContentLabel = "ANNOTATION"
    pr.PresentationCreationDate = study["date"]
    pr.PresentationCreationTime = "120000"
    pr_series = Dataset()
    pr_series.SeriesInstanceUID = ct_series
    pr_series.ReferencedImageSequence = Sequence(
        [_reference(CT, img.SOPInstanceUID) for img in images]
    )
    pr.ReferencedSeriesSequence = Sequence([pr_series])
    b.save(pr, "pr")

    ko = obj(KEY_OBJECT, "KO", 7, "ko")
    ko.ValueType = "CONTAINER"
    ko.ContinuityOfContent = "SEPARATE"
    ko.ConceptNameCodeSequence = Sequence([title])
    ko_item = Dataset()
    ko_item.RelationshipType = "CONTAINS"
    ko_item.ValueType = "IMAGE"
    ko_item.ReferencedSOPSequence = Sequence([_reference(CT, images[2].SOPInstanceUID)])
    ko.ContentSequence = Sequence([ko_item])
    b.save(ko, "ko", convert=["dcmconv", "+td"])

    pdf = obj(ENCAPSULATED_PDF, "DOC", 8, "pdf")
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.DocumentTitle = "Arztbrief"
    pdf.BurnedInAnnotation = "YES"
    pdf.EncapsulatedDocument = _PDF + (b"\x00" if len(_PDF) % 2 else b"")
    b.save(pdf, "encapsulated-pdf")

    raw = obj(RAW_DATA, "OT", 9, "raw")
    raw.add_new(0x00091010, "LO", "PACSNPULL CORPUS")
    raw.add_new(0x00091011, "OB", bytes(range(256)))
    b.save(raw, "raw-data")

    private = obj(PRIVATE_CLASS, "OT", 10, "private")
    private.add_new(0x00291010, "LO", "PACSNPULL CORPUS")
    private.add_new(0x00291011, "OB", b"vendor data\x00")
    b.save(private, "private-class")

    retired = obj(RETIRED_CLASS, "NM", 11, "retired")
    b.pixels(retired, rows=16, columns=16, stored=16)
    b.save(retired, "retired-class", convert=["dcmconv", "+ti"])


def _character_set_studies(b: _Builder) -> None:
    for n, (charset, name, description) in enumerate(CHARACTER_SETS, start=1):
        patient = {"id": f"CORPUS-CS{n:02d}", "name": name}
        study = _study(b, f"charset {n}", description, f"CS{n:04d}")
        ds = b.base(
            sop_class=CT, modality="CT", patient=patient, study=study,
            series_uid=b.uid("charset series", n), series_number=1, instance_number=1,
            charset=charset,
        )  # fmt: skip
        # Only the name and the descriptions in the character set; the rest ASCII.
        ds.SeriesDescription = description
        ds.InstitutionName = "Hopital Exemple"
        ds.ReferringPhysicianName = "Weiss^Anna"
        b.ct(ds, rows=16, columns=16)
        b.save(ds, f"charset {charset}")


def generate_corpus(out_dir: Path, *, seed: int = 7) -> Corpus:
    """Write the corpus under ``out_dir`` and return (and write) its manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # a line per tile otherwise
    builder = _Builder(out_dir, seed)
    try:
        _syntaxes_study(builder)
        _multiframe_study(builder)
        _radiotherapy_study(builder)
        _character_set_studies(builder)
    finally:
        builder.close()
    corpus = Corpus(root=out_dir, instances=builder.written)
    corpus.write_csv(out_dir / "corpus.csv")
    return corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    corpus = generate_corpus(args.out_dir, seed=args.seed)
    print(
        f"{len(corpus.instances)} instances in {len(corpus.studies)} studies, "
        f"{len(corpus.transfer_syntaxes)} transfer syntaxes, {len(corpus.sop_classes)} SOP classes"
    )


if __name__ == "__main__":
    main()
