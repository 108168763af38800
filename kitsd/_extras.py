"""The error for an optional library that is missing: it names the extra to install.

Every module that needs an optional library (``kitsd.prometheus``, ``kitsd.otel``,
``kitsd.ratelimit``, the drivers) imports it at the top inside::

    try:
        import prometheus_client
    except ModuleNotFoundError as error:
        raise missing_extra(error, "kitsd.prometheus", "prometheus") from error

so ``import kitsd.prometheus`` without it fails with one line that says what to do,
instead of a bare ``No module named 'prometheus_client'``.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(error: ModuleNotFoundError, module: str, extra: str) -> ModuleNotFoundError:
    """A ``ModuleNotFoundError`` saying that ``module`` needs the extra ``extra``.

    ``error`` is the import error raised for the library (chain it with ``from``); its
    ``name`` is kept, so code that catches ``ImportError`` and reads ``.name`` still can.
    """
    library = (error.name or "its library").split(".")[0]
    return ModuleNotFoundError(
        f"{module} needs {library}, which is not installed: pip install 'kitsd[{extra}]'",
        name=error.name,
    )
