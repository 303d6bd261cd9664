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
        (0xC000, "unknown move destination", False),
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
