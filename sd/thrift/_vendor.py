"""thriftpy2, as sd.thrift uses it: the handful of its classes, in one place.

thriftpy2's Cython classes carry no type information, so they are typed ``Any``
here and nowhere else.  On CPython with thriftpy2's extensions (the wheels) the
binary protocol and the buffered transport are the Cython ones; elsewhere
thriftpy2 itself falls back to its pure-Python classes under the same names.

Used: ``BinaryProtocol`` / ``CompactProtocol`` (encode, and decode through
``BufferedTransport``, which raises at the end of its input), ``MemoryBuffer``
(encoding only: it shortens reads past its end silently), the asyncio protocols
for buffered replies, ``TApplicationException`` and ``TMessageType``.
``tests/thrift/test_vendor.py`` checks each behaviour this relies on.
"""

from __future__ import annotations

from typing import Any

import thriftpy2.protocol as _protocol
import thriftpy2.transport as _transport
from thriftpy2.contrib.aio.protocol import binary as _aio_binary
from thriftpy2.contrib.aio.protocol import compact as _aio_compact
from thriftpy2.thrift import TApplicationException, TMessageType

__all__ = [
    "AsyncBinaryProtocol",
    "AsyncCompactProtocol",
    "BinaryProtocol",
    "BufferedTransport",
    "CompactProtocol",
    "MemoryBuffer",
    "TApplicationException",
    "TMessageType",
]

BinaryProtocol: Any = _protocol.TCyBinaryProtocol
CompactProtocol: Any = _protocol.TCompactProtocol
BufferedTransport: Any = _transport.TCyBufferedTransport
MemoryBuffer: Any = _transport.TCyMemoryBuffer
AsyncBinaryProtocol: Any = _aio_binary.TAsyncBinaryProtocol
AsyncCompactProtocol: Any = _aio_compact.TAsyncCompactProtocol
