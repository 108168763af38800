"""The etcd driver: :class:`EtcdInstancer`, :class:`EtcdRegistrar` and :func:`connect`.

Clients come from etcd-sdk-python (module ``pyetcd``) or python-etcd3 (module
``etcd3``), imported only when :func:`connect` builds one, so importing this
package works without them.  Any client object of either library is accepted,
as is what :func:`connect` returns (a :class:`VendorClient`, the adapter that
keeps every vendor workaround in :mod:`sd.etcd.adapter`) or any object
implementing the small protocols of :mod:`sd.etcd.client`.

Modules: ``client`` (the protocols), ``adapter`` (pyetcd/etcd3), ``connect``,
``errors`` (classification of vendor errors), ``revision`` and ``paging``
(pure), ``instancer``, ``registrar``, ``url``.

There is no ``AsyncEtcdInstancer``: both client libraries are synchronous gRPC,
so an asyncio variant would be the same watch thread delivering through the
event loop.  Subscribe with a callback that hands events to your loop
(``loop.call_soon_threadsafe``) instead.
"""

from kitsd.sd.etcd.adapter import VendorClient
from kitsd.sd.etcd.client import EtcdClient, EtcdLeases, EtcdReader
from kitsd.sd.etcd.connect import close_client, connect
from kitsd.sd.etcd.instancer import EtcdInstancer
from kitsd.sd.etcd.registrar import EtcdRegistrar

__all__ = [
    "EtcdClient",
    "EtcdInstancer",
    "EtcdLeases",
    "EtcdReader",
    "EtcdRegistrar",
    "VendorClient",
    "close_client",
    "connect",
]
