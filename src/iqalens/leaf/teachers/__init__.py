"""Teacher backends and their registry (:mod:`iqalens.leaf.teachers.registry`: specs, ``make_teacher``)."""
