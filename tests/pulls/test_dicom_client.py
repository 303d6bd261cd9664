"""The DICOM client against real PACS: Orthanc and DCMTK's dcmqrscp."""

import socket
import threading
import time

import pytest
from pydicom.dataset import Dataset

from pulls.dicom import PacsRejected, PacsTimeout, PacsUnavailable, Session, echo
from pulls.sandbox.procs import free_port
from tests.conftest import peer_for


def test_orthanc_answers_echo(orthanc):
    result = echo(peer_for(orthanc.dicom_port, "ORTHANC"))
    assert result.status == 0x0000


def test_dcmqrscp_answers_echo(dcmqrscp):
    result = echo(peer_for(dcmqrscp.port, "DCMQRSCP"))
    assert result.status == 0x0000


def test_pynetdicom_qrscp_answers_echo(qrscp):
    assert echo(peer_for(qrscp.port, "QRSCP")).status == 0x0000


def _studies(peer) -> set[str]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    with Session(peer, services=("find",)) as session:
        return {str(m.StudyInstanceUID) for m in session.find(query)}


def test_it_finds_every_generated_study_on_orthanc(orthanc, dicom_data):
    assert _studies(peer_for(orthanc.dicom_port, "ORTHANC")) == set(dicom_data.studies)


def test_it_finds_every_generated_study_on_dcmqrscp(dcmqrscp, dicom_data):
    assert _studies(peer_for(dcmqrscp.port, "DCMQRSCP")) == set(dicom_data.studies)


def test_it_finds_every_generated_study_on_qrscp(qrscp, dicom_data):
    assert _studies(peer_for(qrscp.port, "QRSCP")) == set(dicom_data.studies)


def test_it_names_the_called_ae_title_when_rejected(orthanc):
    with pytest.raises(PacsRejected) as info:
        echo(peer_for(orthanc.dicom_port, "NOT-ORTHANC"))
    assert "Called AE title not recognised" in str(info.value)
    assert "'NOT-ORTHANC'" in str(info.value)
    assert info.value.retryable is False


def test_it_says_connection_refused_when_nothing_listens():
    port = free_port()
    with pytest.raises(PacsUnavailable) as info:
        echo(peer_for(port, "NOBODY", connect_timeout=3))
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "connection refused" in str(info.value)


def test_it_times_out_on_a_peer_that_accepts_and_never_answers():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(PacsTimeout) as info:
            echo(peer_for(listener.getsockname()[1], "SILENT", acse_timeout=2))
    finally:
        listener.close()
    # It gave up by itself (the peer never closes): after its 2 s, not after the
    # default 30 s. Generous: a busy machine stretches 2 s, not to 25.
    assert time.monotonic() - started < 25
    assert "did not answer the association request within 2 s" in str(info.value)
