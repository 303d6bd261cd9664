"""Failure statuses explained in words a person can act on, and whether to retry."""

import pytest

from pulls.dicom.errors import PacsStatusError


@pytest.mark.parametrize(
    ("status", "words", "retryable"),
    [
        (0xA801, "does not know the move destination AE title", False),
        (0xA701, "could not count the matches", True),
        (0xA702, "could not send the instances", True),
        (0xA700, "out of resources", True),
        (0xC000, "unknown move destination", False),  # Orthanc's answer to one
        (0xC123, "unable to process", False),
        (0xB000, "some instances failed to transfer", True),
        (0x0122, "does not support this query/retrieve model", False),
        (0xA900, "does not match", False),
    ],
)
def test_each_status_has_a_meaning_and_a_retry_decision(status, words, retryable):
    error = PacsStatusError("C-MOVE", status, comment="busy")
    assert f"0x{status:04X}" in str(error)
    assert words in str(error)
    assert "(PACS says: busy)" in str(error)
    assert error.retryable is retryable


def test_c000_names_move_destinations_only_for_a_c_move():
    """Orthanc answers 0xC000 to a C-MOVE whose destination it does not know, and
    to a C-GET whose instance it cannot send in any offered class and syntax:
    each says what it can mean for that operation, not the other's cause."""
    get = PacsStatusError("C-GET", 0xC000)
    assert "move destination" not in str(get)
    assert "SOP class and transfer syntax" in str(get)
    assert str(get).startswith("C-GET failed")
    assert "move destination" in str(PacsStatusError("C-MOVE", 0xC000))
    assert "move destination" not in str(PacsStatusError("C-FIND", 0xC000))


def test_a_failure_names_the_offending_element_and_the_pacs_comment():
    error = PacsStatusError("C-FIND", 0xA900, comment="no", offending=(0x00080020, 0x00091001))
    assert "offending element StudyDate (0008,0020), (0009,1001)" in str(error)
    assert "(PACS says: no)" in str(error)
