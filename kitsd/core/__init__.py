"""The small core that :mod:`kitsd.sd`, :mod:`kitsd.lb` and :mod:`kitsd.breaker` stand on.

- :mod:`kitsd.core.endpoint` — the endpoint, factory and middleware types;
- :mod:`kitsd.core.middleware` — :func:`chain`;
- :mod:`kitsd.core.deadline` — the per-call deadline (:func:`remaining`);
- :mod:`kitsd.core.errors` — the one error tree, and the redaction of values in messages;
- :mod:`kitsd.core.observe` — the event seam every layer reports to.

Nothing here imports a driver, a balancer or a breaker: the import graph flows one way,
from this core up to ``sd``, ``lb`` and ``breaker`` and on to the composition modules of
:mod:`kitsd` (the transport, the command line, the adapters).  The public names are
re-exported where users meet them (``sd.Endpoint``, ``sd.chain``, ``lb.remaining``,
``sd.KitsdError``…).
"""
