"""The ZooKeeper driver: :class:`ZKInstancer`, :class:`ZKRegistrar` and :func:`connect`.

Clients are ``kazoo.client.KazooClient`` objects (extra ``zk``: ``pip install
'kitsd[zk]'``); kazoo is imported only when :func:`connect` builds one or an
error is classified, so importing this package works without it.

Instances are the data of the children of a node, as go-kit's ``sd/zk`` keeps
them: :class:`ZKRegistrar` creates an ephemeral sequential child holding
``host:port``; :class:`ZKInstancer` watches the children and their data.

There is no async instancer: kazoo is a threaded client.  From asyncio, use
:class:`sd.EventStream` and :class:`sd.AsyncRegistrar`.
"""

from kitsd.sd.zk.client import ZKClient, close_client, connect
from kitsd.sd.zk.instancer import ZKInstancer
from kitsd.sd.zk.registrar import ZKRegistrar

__all__ = ["ZKClient", "ZKInstancer", "ZKRegistrar", "close_client", "connect"]
