"""Synthetic DICOM studies for tests, the demo PACS and benchmarks.

Deterministic by seed: the same arguments give the same UIDs, tags and bytes.
Patients x studies x series x instances of small CT / MR / CR images with
realistic tags (non-ASCII names in ISO_IR 192, accession numbers, study dates
over several years), and a manifest of every instance written.

    python -m pulls.sandbox.synthetic OUT_DIR --patients 5 --studies 2 --series 2 --instances 3
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}
_STUDY_TYPES = {
    "CT": ["CT THORAX MIT KM", "CT ABDOMEN", "CT SCHÄDEL NATIV", "CT ANGIO PULMONARY"],
    "MR": ["MR KNIE LINKS", "MR BRAIN W/WO", "MR LWS", "IRM ÉPAULE DROITE"],
    "CR": ["CR THORAX PA", "CR HAND RECHTS", "CR BECKEN"],
}
_SERIES_TYPES = {
    "CT": ["Topogramm", "Weichteil 3.0", "Lunge 1.0", "Knochen 2.0"],
    "MR": ["t1_se_cor", "t2_tse_sag", "pd_fs_ax", "dwi_b1000"],
    "CR": ["PA", "LATERAL", "AP"],
}
_FAMILY = ["Müller", "Ødegård", "García", "Lefèvre", "Nuñez", "Şahin", "Kowalczyk", "Björk"]
_GIVEN = ["Jürgen", "Åse", "José", "Chloé", "Zoë", "Ömer", "Łucja", "Søren", "Anaïs"]


@dataclass(frozen=True)
class Instance:
    path: str  # relative to the output folder
    patient_id: str
    patient_name: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    study_date: str
    accession_number: str
    study_description: str
    series_number: int
    instance_number: int
    size: int


@dataclass
class Manifest:
    root: Path
    instances: list[Instance]

    @property
    def studies(self) -> dict[str, list[Instance]]:
        out: dict[str, list[Instance]] = {}
        for inst in self.instances:
            out.setdefault(inst.study_instance_uid, []).append(inst)
        return out

    @property
    def series(self) -> dict[str, list[Instance]]:
        out: dict[str, list[Instance]] = {}
        for inst in self.instances:
            out.setdefault(inst.series_instance_uid, []).append(inst)
        return out

    @property
    def patients(self) -> dict[str, list[Instance]]:
        out: dict[str, list[Instance]] = {}
        for inst in self.instances:
            out.setdefault(inst.patient_id, []).append(inst)
        return out

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Instance)])
            writer.writeheader()
            for inst in self.instances:
                writer.writerow(asdict(inst))

    @classmethod
    def read_csv(cls, path: Path) -> Manifest:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        instances = [
            Instance(
                **{
                    **row,
                    "series_number": int(row["series_number"]),
                    "instance_number": int(row["instance_number"]),
                    "size": int(row["size"]),
                }
            )
            for row in rows
        ]
        return cls(root=path.parent, instances=instances)


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["pacsnpull-synthetic", str(seed), *map(str, parts)])


def _dataset(
    *,
    rng: random.Random,
    seed: int,
    modality: str,
    patient: dict[str, str],
    study: dict[str, str],
    series_uid: str,
    series_number: int,
    series_description: str,
    instance_number: int,
    size: int,
) -> Dataset:
    sop_uid = _uid(seed, series_uid, instance_number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study["date"]
    ds.SeriesDate = study["date"]
    ds.StudyTime = study["time"]
    ds.SeriesTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.Modality = modality
    ds.Manufacturer = "pacsnpull synthetic"
    ds.InstitutionName = "Kantonsspital Beispiel"
    ds.ReferringPhysicianName = "Dr^Weiß"
    ds.StudyDescription = study["description"]
    ds.SeriesDescription = series_description
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientSex = patient["sex"]
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study["id"]
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = _uid(seed, series_uid, "for")
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number) * 2.5]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [0.8, 0.8]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.KVP = 120
    ds.PixelData = rng.randbytes(size * size * 2)
    return ds


def generate(
    out_dir: Path,
    *,
    patients: int = 3,
    studies: int = 2,
    series: int = 2,
    instances: int = 3,
    seed: int = 1,
    size: int = 16,
    modalities: tuple[str, ...] = ("CT", "MR", "CR"),
) -> Manifest:
    """Write the studies under ``out_dir`` and return (and write) their manifest."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Instance] = []
    first_day = dt.date(2018, 1, 1).toordinal()
    last_day = dt.date(2025, 12, 31).toordinal()
    for p in range(patients):
        patient = {
            "id": f"PNP{seed:02d}{p:05d}",
            "name": f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
            "birth_date": dt.date.fromordinal(
                dt.date(1930, 1, 1).toordinal() + rng.randrange(30000)
            ).strftime("%Y%m%d"),
            "sex": rng.choice("MFO"),
        }
        for s in range(studies):
            modality = modalities[(p + s) % len(modalities)]
            study = {
                "uid": _uid(seed, "study", p, s),
                "date": dt.date.fromordinal(rng.randint(first_day, last_day)).strftime("%Y%m%d"),
                "time": f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
                "accession": f"A{seed:02d}{p:05d}{s:03d}",
                "description": rng.choice(_STUDY_TYPES[modality]),
                "id": str(s + 1),
            }
            for r in range(series):
                series_uid = _uid(seed, "series", p, s, r)
                description = _SERIES_TYPES[modality][r % len(_SERIES_TYPES[modality])]
                for i in range(instances):
                    ds = _dataset(
                        rng=rng,
                        seed=seed,
                        modality=modality,
                        patient=patient,
                        study=study,
                        series_uid=series_uid,
                        series_number=r + 1,
                        series_description=description,
                        instance_number=i + 1,
                        size=size,
                    )
                    rel = (
                        Path(patient["id"]) / study["uid"] / series_uid / f"{ds.SOPInstanceUID}.dcm"
                    )
                    path = out_dir / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(path, enforce_file_format=True)
                    written.append(
                        Instance(
                            path=str(rel),
                            patient_id=patient["id"],
                            patient_name=patient["name"],
                            study_instance_uid=study["uid"],
                            series_instance_uid=series_uid,
                            sop_instance_uid=ds.SOPInstanceUID,
                            sop_class_uid=ds.SOPClassUID,
                            modality=modality,
                            study_date=study["date"],
                            accession_number=study["accession"],
                            study_description=study["description"],
                            series_number=r + 1,
                            instance_number=i + 1,
                            size=path.stat().st_size,
                        )
                    )
    manifest = Manifest(root=out_dir, instances=written)
    manifest.write_csv(out_dir / "manifest.csv")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--studies", type=int, default=2, help="per patient")
    parser.add_argument("--series", type=int, default=2, help="per study")
    parser.add_argument("--instances", type=int, default=3, help="per series")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=16, help="rows and columns")
    args = parser.parse_args(argv)
    manifest = generate(
        args.out_dir,
        patients=args.patients,
        studies=args.studies,
        series=args.series,
        instances=args.instances,
        seed=args.seed,
        size=args.size,
    )
    print(f"{len(manifest.instances)} instances in {len(manifest.studies)} studies")


if __name__ == "__main__":
    main()
