"""Which transfer syntax we pick when a PACS offers several (we choose as acceptor).

Receive what the PACS holds, without loss: explicit VR little endian first
(how most archives store uncompressed images), then the lossless compressions,
then implicit VR; lossy syntaxes come last so they are chosen only when the
PACS offers nothing else (it then holds lossy data and cannot do better), and
we never ask an archive to compress lossily on the way out.
"""

from pynetdicom import ALL_TRANSFER_SYNTAXES

_FIRST = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K RPCL lossless
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 part 2 lossless
    "1.2.840.10008.1.2.4.110",  # JPEG XL lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # Deflated explicit VR LE
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
]
_LAST = ["1.2.840.10008.1.2.2"]  # Explicit VR Big Endian (retired)

PREFERRED_TRANSFER_SYNTAXES: list[str] = (
    _FIRST + [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in _FIRST + _LAST] + _LAST
)
