"""Small studies fetched together: one C-GET naming several studies in a UID list.

PS3.4 lets a retrieval's unique key hold a list of UIDs (C.2.2.2.2, UID list
matching); Orthanc takes one in a C-GET. A study of a few instances costs the
PACS and us more in its request and responses than in its instances (traced:
a one-instance study ~0.5 ms of our time and ~0.5 ms of Orthanc's in its own
C-GET; in lists of 20, 40 % less of each). So the rows of such studies are
fetched together, and each row is then judged by what arrived of its own
study: complete, or its own C-GET as before (``result_for`` returns None).

A list the PACS fails (Orthanc fails the whole C-GET when one study cannot be
sent) or answers with nothing is not tried again on that association: its
rows, and the rest, are fetched one by one. A stop (cancel, pause, a stalled
PACS) ends the list's C-GET as it ends a row's. No Django here.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from pulls.dicom.client import Session
from pulls.dicom.errors import PacsStatusError
from pulls.dicom.receiving import ProjectWriter
from pulls.dicom.results import ProgressCallback, RetrieveResult

# A study joins a list when the PACS holds at most this many instances of it
# (beyond that its request is a small part of its cost), and a list names at
# most LIST_STUDIES studies and LIST_INSTANCES instances: a cancel or a stall
# then stops little, and the identifier stays short (20 UIDs of 64 characters).
STUDY_INSTANCES = 10
LIST_STUDIES = 20
LIST_INSTANCES = 100


class StudyList:
    """Studies (UIDs, in row order) to be fetched with one C-GET on a session
    whose writer is a ``receiving.ProjectWriter``; ``classes``: the SOP classes
    the PACS named for them, which the association must propose."""

    def __init__(self, studies: Sequence[str], classes: set[str]) -> None:
        self.studies = list(studies)
        self.classes = classes
        self.fetched = False
        # The list's C-GET, once done; None when it was not done (its classes did
        # not fit) or failed: each row then has its own.
        self.result: RetrieveResult | None = None

    def fetch(self, session: Session, *, on_progress: ProgressCallback | None) -> None:
        """The list's C-GET (at most once). A stop raises as a row's C-GET does
        (PacsAborted where the PACS ignored the C-CANCEL); what arrived stays
        in ``session.writer.placed_instances`` for the rows to take."""
        if self.fetched:
            return
        self.fetched = True
        if session.study_lists_refused or not session.propose_storage(self.classes):
            return
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = self.studies
        writer = session.writer
        writer.expect_studies(self.studies)
        try:
            result = session.get(identifier, model="S", on_progress=on_progress)
        except PacsStatusError:
            session.study_lists_refused = True
            return
        if not result.cancelled and not any(
            p.asked_study in self.studies for p in writer.placed_instances
        ):
            session.study_lists_refused = True  # a PACS that matched nothing to the list
            return
        self.result = result

    def result_for(
        self, writer: ProjectWriter, study: str, present: set[str], expected: int
    ) -> RetrieveResult | None:
        """What the list's C-GET means for the row of ``study``: a result of its
        own where every instance of the study is there (``present`` before, and
        what arrived in ``writer``), or where the disk filled before they all
        were (the row then pauses the job, as its own C-GET would); None where
        the row needs its own C-GET."""
        result = self.result
        if result is None or result.cancelled:
            return None  # not done, failed, or stopped for another row
        # A study whose every instance is there is complete, whatever failed of
        # the others (sub-operations, a full disk): they see to their own.
        arrived = {p.sop_instance_uid for p in writer.placed_instances if p.asked_study == study}
        complete = len(present | arrived) >= expected
        if not complete and not result.no_space:
            return None
        return RetrieveResult(
            status=result.status,
            completed=len(arrived),
            failed=0,
            warning=0,
            failed_sop_uids=[],
            responses=result.responses,
            seconds=result.seconds,
            no_space=not complete,
        )
