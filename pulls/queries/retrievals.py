"""What a retrieval row must name: its study (and series), checked before saving."""

from __future__ import annotations

from pulls.queries.readers import Problem


def retrieval_problems(
    rows: list[dict[str, str]], numbers: list[int], *, patient_root: bool = False
) -> list[Problem]:
    """A retrieval row names what to fetch by its unique keys (PS3.4 C.4.2.2.1):
    one StudyInstanceUID, one SeriesInstanceUID for a series, and the PatientID
    where the node uses the patient root model. Other keys may be there (a seed
    query's); they are not sent (``identifiers.retrieve_identifier``)."""
    problems = []
    for n, row in zip(numbers, rows, strict=True):
        level = row.get("QueryRetrieveLevel")
        uid = row.get("StudyInstanceUID", "")
        series = row.get("SeriesInstanceUID", "")
        if level not in ("STUDY", "SERIES"):
            problems.append(Problem(n, "QueryRetrieveLevel", "a retrieval is by STUDY or SERIES"))
        elif not uid or "\\" in uid or uid == "*":
            problems.append(
                Problem(
                    n,
                    "StudyInstanceUID",
                    "a retrieval row needs one exact StudyInstanceUID; to retrieve by patient, "
                    "accession number or date, run a find job first and use Retrieve these",
                )
            )
        elif level == "SERIES" and not series:
            problems.append(
                Problem(n, "SeriesInstanceUID", "a SERIES row needs its SeriesInstanceUID")
            )
        elif "\\" in series or series == "*":
            problems.append(
                Problem(
                    n,
                    "SeriesInstanceUID",
                    "name one exact series, or leave it empty to retrieve the whole study",
                )
            )
        elif patient_root and (
            not row.get("PatientID") or any(c in row["PatientID"] for c in "*?\\")
        ):
            problems.append(
                Problem(
                    n,
                    "PatientID",
                    "the node uses the patient root model, where a retrieval names the "
                    "patient too: add the study's PatientID (one, exactly)",
                )
            )
    return problems
