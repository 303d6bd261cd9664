"""A corpus of hostile query files, made when the tests run (nothing binary is
committed): what a careless or malicious upload may hold. Each is (name,
bytes); ``write_corpus`` puts them in a folder for the command line."""

from __future__ import annotations

import io
import json
import random
import zipfile
import zlib
from pathlib import Path

HEADER = "QueryRetrieveLevel,PatientID"


def _xlsx(
    sheet_xml: str | list[bytes], *, shared: str | None = None, extra: dict | None = None
) -> bytes:
    """A minimal XLSX around one sheet's XML (a string, or chunks written in turn)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats'
            '-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
            'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml'
            '.worksheet+xml"/>'
            + (
                '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.'
                'openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
                if shared is not None
                else ""
            )
            + "</Types>",
        )
        z.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>",
        )
        z.writestr(
            "xl/workbook.xml",
            '<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
            '2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships'
            '"><sheets><sheet name="q" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            + (
                '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/'
                '2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
                if shared is not None
                else ""
            )
            + "</Relationships>",
        )
        if isinstance(sheet_xml, str):
            z.writestr("xl/worksheets/sheet1.xml", sheet_xml)
        else:
            with z.open("xl/worksheets/sheet1.xml", "w") as member:
                for chunk in sheet_xml:
                    member.write(chunk)
        if shared is not None:
            z.writestr("xl/sharedStrings.xml", shared)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buffer.getvalue()


def _sheet(rows: list[list[str]]) -> str:
    def cell(value: str) -> str:
        return f'<c t="inlineStr"><is><t>{value}</t></is></c>'

    body = "".join("<row>" + "".join(cell(v) for v in row) + "</row>" for row in rows)
    return (
        '<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
        f'2006/main"><sheetData>{body}</sheetData></worksheet>'
    )


def _bomb(unpacked: int) -> bytes:
    """An XLSX whose sheet unpacks to ``unpacked`` bytes of nothing."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0"?><worksheet><sheetData>')
            block = b" " * (1 << 20)
            for _ in range(unpacked >> 20):
                member.write(block)
            member.write(b"</sheetData></worksheet>")
    return buffer.getvalue()


def _lying_bomb() -> bytes:
    """An XLSX whose sheet unpacks to 200 MiB while its zip headers say 1 KiB."""
    head = _sheet([["QueryRetrieveLevel", "PatientID"], ["STUDY", "1"]]).encode()
    blank = b" " * (1 << 20)
    data = bytearray(_xlsx([head[:-30], *[blank] * 200, head[-30:]]))
    sheet = b"xl/worksheets/sheet1.xml"
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.index(signature)
        while data[at + name_at : at + name_at + len(sheet)] != sheet:
            at = data.index(signature, at + 4)
        data[at + size_at : at + size_at + 4] = (1024).to_bytes(4, "little")
    return bytes(data)


def _laughs() -> str:
    entities = '<!ENTITY a "lol">' + "".join(
        f'<!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 10}">' for n in range(8)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE sst [{entities}]><sst xmlns="http://schemas.'
        'openxmlformats.org/spreadsheetml/2006/main"><si><t>&i;</t></si></sst>'
    )


def _json_cases() -> list[tuple[str, bytes]]:
    row = {"QueryRetrieveLevel": "STUDY", "PatientID": "1"}
    cases: list[tuple[str, object | bytes]] = [
        ("deep-50000", b"[" * 50_000 + b"]" * 50_000),
        ("deep-objects", b'[{"a":' * 5_000 + b"1" + b"}]" * 5_000),
        ("deep-4", [[[[row]]]]),
        (
            "number-5000-digits",
            b'[{"QueryRetrieveLevel":"STUDY","PatientID":' + b"9" * 5000 + b"}]",
        ),
        ("number-huge-float", b'[{"QueryRetrieveLevel":"STUDY","PatientID":1e999999}]'),
        ("nan", b'[{"QueryRetrieveLevel":"STUDY","PatientID":NaN}]'),
        ("infinity", b'[{"QueryRetrieveLevel":"STUDY","PatientID":-Infinity}]'),
        ("duplicate-key", b'[{"QueryRetrieveLevel":"STUDY","PatientID":"1","PatientID":"2"}]'),
        ("object-value", [{**row, "PatientName": {"a": 1}}]),
        ("list-value-name", [{**row, "PatientName": ["A", "B"]}]),
        ("list-of-lists-uid", [{**row, "StudyInstanceUID": [["1.2"], ["1.3"]]}]),
        ("list-of-objects", [{**row, "StudyInstanceUID": [{"x": 1}]}]),
        ("bool-value", [{**row, "PatientName": True}]),
        ("null-value", [{**row, "PatientName": None}]),
        ("top-object", row),
        ("top-string", "PatientID"),
        ("top-number", 12),
        ("top-null", None),
        ("empty-list", []),
        ("list-of-strings", ["a", "b"]),
        ("empty-objects", [{}, {}]),
        ("300-keys", [{f"K{n}": "1" for n in range(300)}]),
        ("unknown-keys", [{"Patient ID": "1", "DROP TABLE": "x"}]),
        ("key-5000-chars", [{"A" * 5000: "1"}]),
        ("value-5-MiB", [{**row, "PatientName": "A" * (5 << 20)}]),
        ("control-chars", [{**row, "PatientName": "A\x00B\x07C\x1b[31m"}]),
        ("lone-surrogate", b'[{"QueryRetrieveLevel":"STUDY","PatientName":"\\ud800"}]'),
        ("trailing-comma", b'[{"QueryRetrieveLevel":"STUDY",},]'),
        ("comments", b'[/* x */{"QueryRetrieveLevel":"STUDY"}]'),
        ("single-quotes", b"[{'QueryRetrieveLevel':'STUDY'}]"),
        ("not-utf8", b'[{"QueryRetrieveLevel":"STUDY","PatientName":"M\xfcller"}]'),
        ("utf16", json.dumps([row]).encode("utf-16")),
        ("bom-utf8", b"\xef\xbb\xbf" + json.dumps([row]).encode()),
        ("truncated", json.dumps([row] * 3).encode()[:-7]),
        ("many-rows-ok", [{**row, "PatientID": str(n)} for n in range(2000)]),
        ("wildcard-uid", [{**row, "StudyInstanceUID": "1.2.*"}]),
        ("uid-list-ok", [{**row, "StudyInstanceUID": ["1.2.3", "1.2.4"]}]),
        ("uid-list-bad", [{**row, "StudyInstanceUID": ["1.2.3", "x"]}]),
        ("date-injection", [{**row, "StudyDate": "20200101' OR 1=1 --"}]),
        ("path-traversal", [{**row, "PatientID": "../../etc/passwd"}]),
        ("html", [{**row, "PatientName": "<script>alert(1)</script>"}]),
        ("formula", [{**row, "PatientName": '=HYPERLINK("http://x")'}]),
        ("whitespace-only", b"   \n\t  "),
        ("number-keys", b'[{"1":"2"}]'),
        ("huge-level", [{"QueryRetrieveLevel": "S" * 10000}]),
        ("level-lowercase", [{"QueryRetrieveLevel": "study", "PatientID": "1"}]),
        ("patient-wildcard", [{"QueryRetrieveLevel": "PATIENT", "PatientID": "*"}]),
        ("many-problems", [{"QueryRetrieveLevel": "X", "StudyDate": "bad"}] * 5000),
        ("zero-width", [{**row, "PatientName": "A\u200bB"}]),
        ("rtl-override", [{**row, "PatientName": "\u202eevil"}]),
    ]
    out = []
    for name, value in cases:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        out.append((f"{name}.json", data))
    return out


def _csv_cases() -> list[tuple[str, bytes]]:
    cases = [
        ("cell-5-MiB", f"{HEADER}\nSTUDY,{'A' * (5 << 20)}\n"),
        ("duplicate-header", "QueryRetrieveLevel,PatientID,PatientID\nSTUDY,1,2\n"),
        ("duplicate-header-case", "QueryRetrieveLevel,PatientID, PatientID \nSTUDY,1,2\n"),
        ("nul-bytes", f"{HEADER}\nSTUDY,1\x002\n"),
        ("unclosed-quote", f'{HEADER}\nSTUDY,"1\nSTUDY,2\n'),
        ("quote-5-MiB", f'{HEADER}\nSTUDY,"' + "A" * (5 << 20)),
        ("300-columns", ",".join(f"K{n}" for n in range(300)) + "\n" + ",".join("1" * 300) + "\n"),
        ("only-header", f"{HEADER}\n"),
        ("no-header", "\n\n\n"),
        ("semicolon", "QueryRetrieveLevel;PatientID\nSTUDY;1\n"),
        ("tab", "QueryRetrieveLevel\tPatientID\nSTUDY\t1\n"),
        ("pipe", "QueryRetrieveLevel|PatientID\nSTUDY|1\n"),
        ("crlf", f"{HEADER}\r\nSTUDY,1\r\n"),
        ("lone-cr", f"{HEADER}\rSTUDY,1\r"),
        ("bom", "\ufeff" + f"{HEADER}\nSTUDY,1\n"),
        ("extra-values", f"{HEADER}\nSTUDY,1,2,3\n"),
        ("fewer-values", f"{HEADER}\nSTUDY\n"),
        ("formula", f"{HEADER}\nSTUDY,=cmd|' /C calc'!A0\n"),
        ("many-empty-rows", f"{HEADER}\n" + ",\n" * 100_000 + "STUDY,1\n"),
        ("long-line-no-delimiter", "Q" * (1 << 20) + "\n"),
        ("unknown-keyword", "QueryRetrieveLevel,PatientIdentifier\nSTUDY,1\n"),
        ("empty-key", "QueryRetrieveLevel,,PatientID\nSTUDY,x,1\n"),
        ("date-iso", "QueryRetrieveLevel,StudyDate\nSTUDY,2020-01-31\n"),
        ("date-range-backwards", "QueryRetrieveLevel,StudyDate\nSTUDY,20201231-20200101\n"),
        ("control", f"{HEADER}\nSTUDY,A\x07B\n"),
        ("html", f"{HEADER}\nSTUDY,<img src=x onerror=alert(1)>\n"),
        ("backslash-list", f"{HEADER}\nSTUDY,1\\2\n"),
        ("many-rows-ok", f"{HEADER}\n" + "".join(f"STUDY,{n}\n" for n in range(5000))),
        ("quotes-ok", f'{HEADER}\n"STUDY","1,2"\n'),
        ("whitespace-keys", " QueryRetrieveLevel , PatientID \nSTUDY,1\n"),
    ]
    out = [(f"{name}.csv", text.encode("utf-8")) for name, text in cases]
    out += [
        ("latin1.csv", f"{HEADER},PatientName\nSTUDY,1,M\xfcller\n".encode("latin-1")),
        ("utf16.csv", f"{HEADER}\nSTUDY,1\n".encode("utf-16")),
        ("binary.csv", bytes(random.Random(7).randrange(256) for _ in range(4096))),
        ("png.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
        ("zip-as-csv.csv", _xlsx(_sheet([["QueryRetrieveLevel"], ["STUDY"]]))),
    ]
    return out


def _xlsx_cases() -> list[tuple[str, bytes]]:
    ok = [["QueryRetrieveLevel", "PatientID"], ["STUDY", "1"]]
    cases: list[tuple[str, bytes]] = [
        ("bomb-1-GiB", _bomb(1 << 30)),
        ("bomb-300-MiB", _bomb(300 << 20)),
        ("bomb-lying-size", _lying_bomb()),
        ("laughs", _xlsx(_sheet([["QueryRetrieveLevel"]]), shared=_laughs())),
        (
            "shared-strings-70-MiB",
            _xlsx(_sheet(ok), shared="<sst>" + "<si><t>x</t></si>" * (70 << 16) + "</sst>"),
        ),
        ("not-a-zip", b"PK\x03\x04" + b"\x00" * 100),
        ("empty-zip", _empty_zip()),
        ("truncated", _xlsx(_sheet(ok))[:300]),
        ("ok", _xlsx(_sheet(ok))),
        ("duplicate-header", _xlsx(_sheet([["QueryRetrieveLevel", "PatientID", "PatientID"]]))),
        ("300-columns", _xlsx(_sheet([[f"K{n}" for n in range(300)], ["1"] * 300]))),
        ("cell-70k", _xlsx(_sheet([["QueryRetrieveLevel", "PatientID"], ["STUDY", "A" * 70000]]))),
        ("no-header", _xlsx(_sheet([]))),
        (
            "html-cell",
            _xlsx(_sheet([["QueryRetrieveLevel", "PatientName"], ["STUDY", "&lt;b&gt;"]])),
        ),
        ("many-members", _xlsx(_sheet(ok), extra={f"x/{n}.xml": "<a/>" for n in range(1200)})),
        ("external-entity", _xlsx(_sheet(ok), shared=_external())),
        ("many-rows", _xlsx(_sheet([ok[0]] + [["STUDY", str(n)] for n in range(3000)]))),
        ("bad-xml", _xlsx("<worksheet><sheetData><row><c>")),
        ("formula-cell", _xlsx(_sheet([["QueryRetrieveLevel", "PatientID"], ["STUDY", "=1+1"]]))),
    ]
    return [(f"{name}.xlsx", data) for name, data in cases]


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    return buffer.getvalue()


def _external() -> str:
    return (
        '<?xml version="1.0"?><!DOCTYPE sst [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>&x;'
        "</t></si></sst>"
    )


def _misc_cases() -> list[tuple[str, bytes]]:
    return [
        ("empty.json", b""),
        ("empty.csv", b""),
        ("empty.xlsx", b""),
        ("noextension", b"QueryRetrieveLevel,PatientID\nSTUDY,1\n"),
        ("json-named.csv", b'[{"QueryRetrieveLevel":"STUDY"}]'),
        ("csv-named.json", b"QueryRetrieveLevel\nSTUDY\n"),
        ("weird.ext", b"\x00\x01\x02"),
        ("../../escape.csv", b"QueryRetrieveLevel,PatientID\nSTUDY,1\n"),
        ("name-with\nnewline.csv", b"QueryRetrieveLevel,PatientID\nSTUDY,1\n"),
        ("gzip.json", zlib.compress(b'[{"QueryRetrieveLevel":"STUDY"}]')),
    ]


def hostile_files() -> list[tuple[str, bytes]]:
    files = _json_cases() + _csv_cases() + _xlsx_cases() + _misc_cases()
    # Cases again under another format's name, as people rename files.
    files += [(name.rsplit(".", 1)[0] + ".as.json", data) for name, data in _csv_cases()[:30]]
    files += [(name.rsplit(".", 1)[0] + ".as.xlsx", data) for name, data in _json_cases()[:15]]
    return files


def write_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (name, data) in enumerate(hostile_files()):
        safe = name.replace("/", "_").replace("\n", "_").replace(".", "_", name.count(".") - 1)
        path = folder / f"{n:03d}-{safe}"
        path.write_bytes(data)
        paths.append(path)
    return paths
