"""The synthetic generator: deterministic, valid, realistic, with a true manifest."""

from pydicom import dcmread

from pulls.sandbox.synthetic import Manifest, generate


def test_it_is_deterministic_by_seed(tmp_path):
    a = generate(tmp_path / "a", patients=2, studies=1, series=2, instances=2, seed=5)
    b = generate(tmp_path / "b", patients=2, studies=1, series=2, instances=2, seed=5)
    c = generate(tmp_path / "c", patients=2, studies=1, series=2, instances=2, seed=6)
    assert [i.sop_instance_uid for i in a.instances] == [i.sop_instance_uid for i in b.instances]
    for x, y in zip(a.instances, b.instances, strict=True):
        assert (a.root / x.path).read_bytes() == (b.root / y.path).read_bytes()
    assert not {i.sop_instance_uid for i in a.instances} & {i.sop_instance_uid for i in c.instances}


def test_the_manifest_describes_the_files(tmp_path):
    made = generate(tmp_path, patients=3, studies=2, series=2, instances=3, seed=1)
    assert len(made.instances) == 3 * 2 * 2 * 3
    assert len(made.studies) == 6
    assert {i.modality for i in made.instances} == {"CT", "MR", "CR"}
    reread = Manifest.read_csv(tmp_path / "manifest.csv")
    assert reread.instances == made.instances
    for inst in made.instances:
        ds = dcmread(tmp_path / inst.path)
        assert ds.SOPInstanceUID == inst.sop_instance_uid
        assert ds.StudyInstanceUID == inst.study_instance_uid
        assert ds.PatientName == inst.patient_name
        assert ds.AccessionNumber == inst.accession_number
        assert len(ds.PixelData) == ds.Rows * ds.Columns * 2


def test_patient_names_are_not_only_ascii(tmp_path):
    made = generate(tmp_path, patients=8, studies=1, series=1, instances=1, seed=2)
    assert any(not i.patient_name.isascii() for i in made.instances)
    dates = {i.study_date[:4] for i in made.instances}
    assert len(dates) > 1
