"""The SCP's index of what it staged: used only for the very file it describes."""

import os

from pulls.dicom.staging import INDEX_NAME, staged_index, study_dir
from pulls.dicom.storage_scp import StorageSCP
from pulls.retrieval.work import _place_staged
from pulls.sandbox.procs import free_port
from tests.pulls.test_storage_scp import _send


def _stage_study(staging, dicom_data):
    study, instances = sorted(dicom_data.studies.items())[0]
    port = free_port()
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=staging):
        assert set(_send(port, [dicom_data.root / i.path for i in instances])) == {0}
    return study, instances


def test_the_scp_notes_each_staged_instance_with_its_keys_and_inode(tmp_path, dicom_data):
    study, instances = _stage_study(tmp_path, dicom_data)

    index = staged_index(tmp_path, study)

    assert set(index) == {f"{i.sop_instance_uid}.dcm" for i in instances}
    for inst in instances:
        inode, size, keys = index[f"{inst.sop_instance_uid}.dcm"]
        stat = os.stat(study_dir(tmp_path, study) / f"{inst.sop_instance_uid}.dcm")
        assert (inode, size) == (stat.st_ino, stat.st_size)
        assert keys == {
            "PatientID": inst.patient_id,
            "StudyInstanceUID": inst.study_instance_uid,
            "SeriesInstanceUID": inst.series_instance_uid,
            "SOPInstanceUID": inst.sop_instance_uid,
            "Modality": inst.modality,
            "SOPClassUID": inst.sop_class_uid,
            "TransferSyntaxUID": "1.2.840.10008.1.2.1",
        }


def test_placement_trusts_an_index_line_only_for_the_file_it_names(
    tmp_path, project, dicom_data, settings
):
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    staging = tmp_path / "staging"
    study, instances = _stage_study(staging, dicom_data)
    first, second, *_ = sorted(instances, key=lambda i: i.sop_instance_uid)
    folder = study_dir(staging, study)
    # Lines that say otherwise: one for the first file's real inode (the index
    # is believed), one for an inode the second file does not have (it is read).
    for inst, inode in (
        (first, os.stat(folder / f"{first.sop_instance_uid}.dcm").st_ino),
        (second, 1),
    ):
        name = f"{inst.sop_instance_uid}.dcm"
        line = [name, str(inode), "123", "NOTED", study, "1.2.3", inst.sop_instance_uid, "OT"]
        line += [inst.sop_class_uid, "1.2.840.10008.1.2.1"]
        with open(folder / INDEX_NAME, "a") as fh:
            fh.write("\t".join(line) + "\n")
    with open(folder / INDEX_NAME, "a") as fh:
        fh.write("half a line\t12")  # a write cut short is ignored

    placed = {p.sop_instance_uid: p for p in _place_staged(project, staging, study, None)}

    assert set(placed) == {i.sop_instance_uid for i in instances}
    assert placed[first.sop_instance_uid].path.startswith("NOTED/")
    assert placed[first.sop_instance_uid].size == 123
    assert placed[second.sop_instance_uid].patient_id == second.patient_id
    assert placed[second.sop_instance_uid].series_instance_uid == second.series_instance_uid
    for placed_one in placed.values():
        assert (project.storage_dir / placed_one.path).is_file()
    # Nothing staged is left, so the index is emptied for the next retrieval.
    assert (folder / INDEX_NAME).stat().st_size == 0


def test_values_the_index_cannot_hold_are_left_to_the_file(tmp_path):
    from pulls.dicom.staging import IndexWriter

    folder = tmp_path / "1.2.3"
    folder.mkdir()
    index = IndexWriter()
    keys = {"PatientID": "A\tB", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1",
            "SOPInstanceUID": "2", "Modality": "CT"}  # fmt: skip
    index.append(str(folder), "2.dcm", 5, 10, keys)
    index.append(str(folder), "3.dcm", 6, 10, {**keys, "PatientID": "line\nbreak"})
    index.append(str(folder), "4.dcm", 7, 10, {**keys, "PatientID": "Müller"})
    index.close()

    assert set(staged_index(tmp_path, "1.2.3")) == {"4.dcm"}
    assert staged_index(tmp_path, "1.2.3")["4.dcm"][2]["PatientID"] == "Müller"
