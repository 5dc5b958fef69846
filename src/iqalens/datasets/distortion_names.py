"""Readable names of a manifest's distortion types (``dist_type``), for tables and breakdowns.

Why a module of its own: a type id means different things in different databases (KADID-10k's 1 is
Gaussian blur, TID2013's 01 additive noise), and only the manifest's ``source`` says which numbering
applies; the evaluation layer below works on whatever labels it is given.
"""

from __future__ import annotations

from iqalens.errors import UnknownNameError

__all__ = ["CLEAN", "KADID_NUMBERED_SOURCES", "distortion_label"]

#: The label of images without a distortion type (the clean references of a benchmark).
CLEAN = "clean"


#: Sources whose numeric ``dist_type`` is a KADID-10k type id (the synthetic benchmark builder's
#: and the KADID-10k importer's); other databases number their own types (TID2013's 01 is noise).
KADID_NUMBERED_SOURCES = frozenset({"synthetic", "kadid10k"})


def distortion_label(dist_type: str, source: str = "synthetic") -> str:
    """The readable name of a manifest's ``dist_type``: for a KADID-numbered ``source`` a type id
    becomes its name (``"7"`` -> ``"color_saturation_1"``); other ids and names are kept as written
    (prefixed with the source when numeric, e.g. ``"tid2013:01"``); an empty one is :data:`CLEAN`."""
    if not dist_type:
        return CLEAN
    if not dist_type.isdigit():
        return dist_type
    if source in KADID_NUMBERED_SOURCES:
        from iqalens.distortions import get_type

        try:
            return str(get_type(int(dist_type)).name)
        except UnknownNameError:  # an id outside KADID's 25: keep it as written
            return dist_type
    return f"{source}:{dist_type}" if source else dist_type
