"""The ``kitsd`` command line: ``kitsd demo`` and ``kitsd watch URL``.

The library itself is the ``sd``, ``lb`` and ``breaker`` packages; this package
sits above all three (it composes them), so that their import graph stays one-way.
"""

__all__: list[str] = []
