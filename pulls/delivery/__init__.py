"""Delivery: a project's files out to the researcher.

``selection`` which instances a job, a project or ticked rows hold; ``zips`` the
streamed ZIP of them; ``deletion`` deleting them (by an owner, or by the
project's retention); ``nifti`` the NIfTI conversion with dcm2niix.
"""
