"""Query files in each format; every problem named with row, key and fix; nothing half-read."""

import io
import json

import pytest
from openpyxl import Workbook

from pulls.queries.files import parse_query_file


def _xlsx(rows: list[list[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_the_seed_json_list_is_read():
    data = json.dumps(
        [
            {"QueryRetrieveLevel": "STUDY", "PatientID": "PNP1", "StudyInstanceUID": ""},
            {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "A1", "StudyDate": "*"},
        ]
    ).encode()
    parsed = parse_query_file(data, name="move.json")
    assert parsed.ok
    assert parsed.rows[1] == {
        "QueryRetrieveLevel": "STUDY",
        "AccessionNumber": "A1",
        "StudyDate": "*",
    }
    assert parsed.numbers == [1, 2]


def test_csv_with_a_bom_semicolons_and_a_default_level():
    data = "\ufeffPatientID;StudyDate;ModalitiesInStudy\nPNP1;20200101-20201231;CT\n".encode()
    parsed = parse_query_file(data, name="q.csv", default_level="STUDY")
    assert parsed.ok, parsed.problems
    assert parsed.rows == [
        {
            "PatientID": "PNP1",
            "StudyDate": "20200101-20201231",
            "ModalitiesInStudy": "CT",
            "QueryRetrieveLevel": "STUDY",
        }
    ]


def test_xlsx_cells_become_dicom_text():
    import datetime as dt

    data = _xlsx(
        [
            ["QueryRetrieveLevel", "PatientID", "StudyDate", "AccessionNumber"],
            ["STUDY", 12345, dt.datetime(2021, 3, 4), None],
            [None, None, None, None],
            ["STUDY", "PNP2", "20210101-", "A9"],
        ]
    )
    parsed = parse_query_file(data, name="q.xlsx")
    assert parsed.ok, parsed.problems
    assert parsed.rows[0]["PatientID"] == "12345"
    assert parsed.rows[0]["StudyDate"] == "20210304"
    assert parsed.numbers == [1, 3]  # the blank row keeps its number


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"", "q.csv", "file: is empty"),
        (b"PatientID\n", "q.csv", "contains no query rows"),
        (b"\xff\xfePatientID", "q.csv", "is not UTF-8"),
        (b"[{", "q.json", "not valid JSON at line 1"),
        (b'{"PatientID": "1"}', "q.json", "a JSON query file is a list of objects"),
        (b"PK\x03\x04broken", "q.xlsx", "cannot read this XLSX file"),
        (b"hello", "q.txt", "use a .json, .csv or .xlsx file"),
        (b"PatientID\n1\n", "q.csv", "row 1, QueryRetrieveLevel: is missing"),
        (b"QueryRetrieveLevel,PatientId\nSTUDY,1\n", "q.csv", "row 1, PatientId: is not a DICOM"),
        (
            b"QueryRetrieveLevel,StudyDate\nSTUDY,20200101\nSTUDY,31.12.2020\n",
            "q.csv",
            "row 2, StudyDate: '31.12.2020' is not a date",
        ),
        (
            b"QueryRetrieveLevel,StudyInstanceUID\nSTUDY,1.2.3*\n",
            "q.csv",
            "row 1, StudyInstanceUID: wildcards",
        ),
        (b"QueryRetrieveLevel,PatientName\nPATIENT,M*\n", "q.csv", "needs an exact PatientID"),
        (b"QueryRetrieveLevel\nPATIENT\n", "q.csv", "needs an exact PatientID"),
        (b"QueryRetrieveLevel,PatientID\nSTUDY,1,extra\n", "q.csv", "has 3 values but the header"),
    ],
)
def test_each_problem_names_the_row_key_and_fix_and_keeps_no_rows(data, name, expected):
    parsed = parse_query_file(data, name=name)
    assert not parsed.ok
    assert parsed.rows == []
    assert any(expected in str(p) for p in parsed.problems), [str(p) for p in parsed.problems]


def test_too_many_rows_and_too_large_files_are_refused():
    rows = "QueryRetrieveLevel,PatientID\n" + "".join(f"STUDY,P{n}\n" for n in range(11))
    parsed = parse_query_file(rows.encode(), name="q.csv", max_rows=10)
    assert "more than 10 rows: split it" in str(parsed.problems[-1])
    parsed = parse_query_file(rows.encode(), name="q.csv", max_bytes=120)
    assert (
        str(parsed.problems[0]) == "file: is 1 KB; the limit is 1 KB: split it into several files"
    )
    assert parsed.rows == []


def test_repeated_rows_are_merged_and_the_preview_says_which():
    data = b"QueryRetrieveLevel,PatientID,StudyDate\nSTUDY,1,\nSTUDY,2,\nSTUDY,1,*\nSTUDY,1,\n"
    parsed = parse_query_file(data, name="q.csv")
    assert parsed.ok
    assert parsed.numbers == [1, 2]
    assert parsed.merged == [(3, 1), (4, 1)]
    assert parsed.merged_text() == (
        "2 repeated row(s) merged into the first: row 3 (as row 1), row 4 (as row 1)"
    )
