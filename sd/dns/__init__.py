"""The DNS SRV driver: :class:`SRVInstancer` (go-kit's ``sd/dnssrv``).

SRV names are what Kubernetes headless services and Consul's DNS interface
publish.  Lookups go through dnspython's asyncio resolver (extra ``dns``:
``pip install 'kitsd[dns]'``), imported only when an instancer is built, so
importing this package works without it.  DNS has no registration: there is
no registrar.  From asyncio, use :class:`sd.EventStream`.
"""

from sd.dns.instancer import SRVInstancer
from sd.dns.srv import RefreshPolicy, SRVInstance, SRVRecord

__all__ = ["RefreshPolicy", "SRVInstance", "SRVInstancer", "SRVRecord"]
