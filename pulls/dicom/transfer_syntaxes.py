"""Transfer syntaxes: which ones a C-GET offers for a storage class, and which
one we take when a PACS offers several.

The rule is "receive what the archive holds": an instance stored compressed
arrives compressed, one stored lossily is never decompressed, and nothing is
ever converted from lossless to lossy.

As the requestor of a C-GET we cannot choose: the PACS (the acceptor) picks one
transfer syntax per presentation context, then converts each instance to the
syntax of a context of its class. So a C-GET offers **one context per transfer
syntax** for each storage class it may receive. Measured against Orthanc 1.10
with a study in thirteen syntaxes: one context per class listing every syntax
made it convert everything to its pick (explicit VR little endian) and fail
the whole C-GET with 0xC000 on JPEG 2000 ("Not implemented yet"); one context
per syntax family (JPEG 2000 lossless and lossy together, say) made it pick one
member and fail the C-GET on the other; one context per syntax brought every
instance byte for byte as the archive holds it.

As the acceptor (the storage SCP of a C-MOVE) we take, per context, the first
syntax the PACS proposes that we know (``accept_from``): the PACS knows what it
holds and proposes that first.
"""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"  # retired, still in old archives
DEFLATED = "1.2.840.10008.1.2.1.99"

UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
# Compressed pixel data, lossless first. The order matters to a PACS that picks
# a context by SOP class alone (DCMTK's dcmqrscp uses the first one accepted
# for the class): the uncompressed and the lossless come before the lossy.
_LOSSLESS_COMPRESSED = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K RPCL Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
)
_LOSSY_COMPRESSED = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
)
_VIDEO = (
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 Level 4.2 2D
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 Level 4.2 3D
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile
)
LOSSY = frozenset(_LOSSY_COMPRESSED + _VIDEO)

# What a C-GET offers, per kind of storage class (one context each).
IMAGE_SYNTAXES = (*UNCOMPRESSED, DEFLATED, *_LOSSLESS_COMPRESSED, *_LOSSY_COMPRESSED)
VIDEO_SYNTAXES = (*UNCOMPRESSED, *_VIDEO, "1.2.840.10008.1.2.4.50")
# Objects without pixel data are never compressed, only deflated (PS3.5 A.5).
NON_PIXEL_SYNTAXES = (*UNCOMPRESSED, DEFLATED)

# Storage classes without pixel data (PS3.4 B.5): structured reports, presentation
# states, key objects, RT objects other than images and dose, encapsulated
# documents, raw data, registrations, segmentations of surfaces, waveforms...
_NON_PIXEL_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA, STL, OBJ, MTL
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registrations, fiducials, surface segmentation
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.68.",  # surface scans
    "1.2.840.10008.5.1.4.1.1.78.",  # lensometry, refractive and other measurements
    "1.2.840.10008.5.1.4.1.1.79.",
    "1.2.840.10008.5.1.4.1.1.80.",
    "1.2.840.10008.5.1.4.1.1.81.",
    "1.2.840.10008.5.1.4.1.1.82.",
    "1.2.840.10008.5.1.4.1.1.200.",  # CT defined procedure protocols
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.6",  # RT brachy treatment record
    "1.2.840.10008.5.1.4.1.1.481.7",  # RT treatment summary record
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT ion plan
    "1.2.840.10008.5.1.4.1.1.481.9",  # RT ion beams treatment record
    "1.2.840.10008.5.1.4.34.",  # RT second generation objects
    "1.2.840.10008.5.1.4.38.",  # hanging protocols and others
    "1.2.840.10008.5.1.4.39.",  # color palettes
    "1.2.840.10008.5.1.4.43.",  # generic implant templates
    "1.2.840.10008.5.1.4.44.",
    "1.2.840.10008.5.1.4.45.",
)
_VIDEO_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
    }
)


def syntaxes_for(sop_class: str) -> tuple[str, ...]:
    """The transfer syntaxes a C-GET offers for ``sop_class``, each in a context
    of its own. A class we do not know (private, new) may hold pixel data."""
    if sop_class in _VIDEO_CLASSES:
        return VIDEO_SYNTAXES
    if sop_class.startswith(_NON_PIXEL_PREFIXES):
        return NON_PIXEL_SYNTAXES
    return IMAGE_SYNTAXES


# Every syntax pydicom and pynetdicom know how a data set is encoded in: what
# the storage SCP accepts. A syntax we do not know could not be read (for the
# keys placement needs), so it is refused rather than stored blind.
KNOWN: frozenset[str] = frozenset(ALL_TRANSFER_SYNTAXES)


def accept_from(proposed: list[str]) -> str | None:
    """As acceptor: the first proposed syntax we know (the PACS's own preference,
    so an instance arrives as it is stored), or None."""
    for uid in proposed:
        if uid in KNOWN:
            return uid
    return None


def is_lossy(transfer_syntax: str) -> bool:
    return transfer_syntax in LOSSY
