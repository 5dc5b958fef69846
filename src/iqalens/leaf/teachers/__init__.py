"""Teacher backends and the ``--teacher SPEC`` parser (see :func:`make_teacher`)."""
