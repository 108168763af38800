"""kitsd load balancing: balancers, retry, and the retry deadline.

Public surface (see ``API.md``): :class:`Balancer`, :class:`RoundRobin`,
:class:`Random`, :class:`NoEndpointsError`, :func:`retry`, :func:`retry_async`,
:class:`RetryError`, :class:`RetryTimeout`, :func:`remaining`; beyond it,
:class:`LeastLoaded` (power of two choices over requests in flight).
"""

from lb.balancer import Balancer, EndpointSource
from lb.ejection import EjectionTable
from lb.errors import NoEndpointsError, RetryError, RetryTimeout
from lb.least_loaded import LeastLoaded
from lb.pick import ejection_table, set_ejection_table
from lb.random import Random
from lb.retry import retry, retry_async
from lb.round_robin import RoundRobin
from sd.deadline import remaining

__all__ = [
    "Balancer",
    "EjectionTable",
    "EndpointSource",
    "LeastLoaded",
    "NoEndpointsError",
    "Random",
    "RetryError",
    "RetryTimeout",
    "RoundRobin",
    "ejection_table",
    "remaining",
    "retry",
    "retry_async",
    "set_ejection_table",
]
