"""DICOMweb as a second transport: finds by QIDO-RS, retrievals by WADO-RS,
sending by STOW-RS, with the same limits, checks and audit as DIMSE.

- ``credentials``: a node's password or token, sealed in the database or read
  from the environment.
- ``multipart``: a streaming reader of ``multipart/related`` responses.
- ``qido``: a C-FIND identifier as a QIDO-RS search, and its answers back.
- ``session``: ``WebSession``, the DICOMweb counterpart of ``pulls.dicom.Session``
  that the runner works rows on.
- ``stow``: sending files to a STOW-RS destination.
"""
