"""PACS nodes (``models``): DIMSE or DICOMweb, with their limits and grants."""
