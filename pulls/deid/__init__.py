"""Pseudonymisation (DICOM PS3.15 Annex E), per project.

Pure modules, no Django: ``profile`` (Table E.1-1 and the options), ``keys``
(pseudonyms, UIDs and date shifts from the project's key), ``walker`` (a data
set's bytes de-identified), ``files`` (an instance de-identified into its place),
``writer`` (C-GET straight into a pseudonymised project). Django's side:
``projects`` (a project's pseudonymiser and names) and ``mapping`` (what the
owners may see of original and pseudonym).
"""
