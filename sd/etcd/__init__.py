"""The etcd driver: :class:`EtcdInstancer`, :class:`EtcdRegistrar` and :func:`connect`.

Clients come from etcd-sdk-python (module ``pyetcd``) or python-etcd3 (module
``etcd3``), imported only when :func:`connect` builds one, so importing this
package works without them.  Any client object of either library is accepted.

There is no ``AsyncEtcdInstancer``: both client libraries are synchronous gRPC,
so an asyncio variant would be the same watch thread delivering through the
event loop.  Subscribe with a callback that hands events to your loop
(``loop.call_soon_threadsafe``) instead.
"""

from sd.etcd.client import EtcdClient, close_client, connect, revive_endpoints
from sd.etcd.instancer import EtcdInstancer
from sd.etcd.registrar import EtcdRegistrar

__all__ = [
    "EtcdClient",
    "EtcdInstancer",
    "EtcdRegistrar",
    "close_client",
    "connect",
    "revive_endpoints",
]
