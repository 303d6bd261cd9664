"""Regenerate pulls/deid/table_e1_1.csv and safe_private.csv from the DICOM standard.

    python3 scripts/ps315_tables.py part15.xml

``part15.xml`` is PS3.15 in DocBook, as NEMA publishes it
(https://dicom.nema.org/medical/dicom/current/source/docbook/part15/part15.xml).
The CSVs hold Table E.1-1 (the Basic Application Level Confidentiality Profile
and its Options, every column) and Table E.3.10-1 (the safe private
attributes) as the standard prints them; pulls/deid/profile.py reads them.
"""

from __future__ import annotations

import csv
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DOCBOOK = "{http://docbook.org/ns/docbook}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
OUT = Path(__file__).resolve().parent.parent / "pulls" / "deid"
TABLES = {"table_E.1-1": "table_e1_1.csv", "table_E.3.10-1": "safe_private.csv"}


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def main(source: str) -> None:
    root = ET.parse(source).getroot()  # noqa: S314  (the standard, fetched by hand)
    for table in root.iter(f"{DOCBOOK}table"):
        name = TABLES.get(table.get(XML_ID, ""))
        if name is None:
            continue
        head = [_text(th) for th in table.iter(f"{DOCBOOK}th")]
        body = table.find(f"{DOCBOOK}tbody")
        rows = [[_text(td) for td in tr.findall(f"{DOCBOOK}td")] for tr in body]
        with open(OUT / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(head)
            writer.writerows(rows)
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
