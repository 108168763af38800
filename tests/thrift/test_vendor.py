"""What sd.thrift relies on in thriftpy2 (sd/thrift/_vendor.py): if one of these
fails after a thriftpy2 upgrade, the drivers need a look before anything else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import thriftpy2

from kitsd.sd.thrift import _vendor


class _Boom(Exception):
    pass


class _Pieces:
    """A transport handing out ``data`` a few bytes at a time, then raising."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self.data = data
        self.step = step

    def read(self, n: int) -> bytes:
        if not self.data:
            raise _Boom("end")
        piece, self.data = self.data[:min(n, self.step)], self.data[min(n, self.step):]
        return piece

    def is_open(self) -> bool:
        return True


def _message(store: Any, protocol: Any) -> bytes:
    buffer = _vendor.MemoryBuffer()
    proto = protocol(buffer)
    proto.write_message_begin("echo", _vendor.TMessageType.REPLY, 5)
    proto.write_struct(store.Store.echo_result(success="hello"))
    proto.write_message_end()
    data: bytes = buffer.getvalue()
    return data


def test_cython_classes_on_cpython() -> None:
    assert "cy" in type(_vendor.BufferedTransport).__module__ or \
        "Cy" in _vendor.BufferedTransport.__name__
    assert thriftpy2.__version__ >= "0.5"


@pytest.mark.parametrize("protocol", ["BinaryProtocol", "CompactProtocol"])
def test_buffered_transport_reads_across_short_reads(store: Any, protocol: str) -> None:
    make = getattr(_vendor, protocol)
    data = _message(store, make)
    proto = make(_vendor.BufferedTransport(_Pieces(data)))
    assert proto.read_message_begin() == ("echo", _vendor.TMessageType.REPLY, 5)
    result = store.Store.echo_result()
    proto.read_struct(result)
    assert result.success == "hello"


@pytest.mark.parametrize("protocol", ["BinaryProtocol", "CompactProtocol"])
def test_transport_errors_leave_unchanged_and_end_of_input_raises(store: Any,
                                                                   protocol: str) -> None:
    make = getattr(_vendor, protocol)
    data = _message(store, make)
    with pytest.raises(_Boom):
        make(_vendor.BufferedTransport(_Pieces(data[:3]))).read_message_begin()

    class Ends(_Pieces):
        def read(self, n: int) -> bytes:
            return super().read(n) if self.data else b""

    with pytest.raises(Exception) as caught:  # thriftpy2's end-of-file error
        make(_vendor.BufferedTransport(Ends(data[:3]))).read_message_begin()
    assert not isinstance(caught.value, _Boom)


@pytest.mark.parametrize("protocol", ["AsyncBinaryProtocol", "AsyncCompactProtocol"])
def test_async_protocols_read_through_transport_read(store: Any, protocol: str) -> None:
    sync = _vendor.BinaryProtocol if protocol == "AsyncBinaryProtocol" else \
        _vendor.CompactProtocol
    data = _message(store, sync)
    asked: list[int] = []

    class Reader:
        def __init__(self) -> None:
            self.data = data

        async def read(self, n: int) -> bytes:
            asked.append(n)
            piece, self.data = self.data[:n], self.data[n:]
            return piece

    async def read() -> Any:
        proto = getattr(_vendor, protocol)(Reader())
        header = await proto.read_message_begin()
        result = store.Store.echo_result()
        await proto.read_struct(result)
        return header, result.success

    assert asyncio.run(read()) == (("echo", _vendor.TMessageType.REPLY, 5), "hello")
    assert sum(asked) == len(data)  # every byte through read(), nothing read ahead
