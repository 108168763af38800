"""The DNS SRV driver: :class:`SRVInstancer` (go-kit's ``sd/dnssrv``).

SRV names are what Kubernetes headless services and Consul's DNS interface
publish.  Lookups go through dnspython's asyncio resolver (extra ``dns``:
``pip install 'kitsd[dns]'``), imported only when an instancer is built, so
importing this package works without it.  DNS has no registration: there is
no registrar.  :class:`AsyncSRVInstancer` runs the same watch as a task on
your event loop (dnspython's resolver is asyncio-native), without a thread.
"""

from kitsd.sd.dns.instancer import AsyncSRVInstancer, SRVInstancer
from kitsd.sd.dns.srv import RefreshPolicy, SRVInstance, SRVRecord

__all__ = ["AsyncSRVInstancer", "RefreshPolicy", "SRVInstance", "SRVInstancer", "SRVRecord"]
