"""Translate a ``/v1/health/service/<name>`` answer into instance strings.

Pure: no I/O, no threads, no clock.

Each entry of the answer is one service instance on one node::

    {"Node": {"Node": "n1", "Address": "10.0.0.5", ...},
     "Service": {"ID": "web-1", "Service": "web", "Address": "", "Port": 8080,
                 "Tags": ["a", "b"], ...},
     "Checks": [...]}

The instance is ``Service.Address`` or, when that is empty, ``Node.Address``
(a service registered without an address lives at its agent's address), with
``Service.Port``; IPv6 addresses come out in brackets (``[::1]:8080``).

Consul filters by one tag on the server (``?tag=``); the instancer asks it to
filter by the first tag and hands the others to :func:`service_instances` as
``required_tags``, which keeps only the entries carrying all of them (as
go-kit's ``filterEntries``: exact, case-sensitive matches).

Each entry's metadata becomes the instance's :class:`~sd.InstanceInfo`
(:func:`entry_info`): ``tags`` from ``Service.Tags``, ``meta`` from
``Service.Meta``, ``weight`` from ``Service.Weights`` -- ``Passing`` when every
check passes, ``Warning`` when one does not (only seen with ``passing_only=False``:
Consul's ``?passing`` leaves such entries out), as Consul's DNS interface weighs
them.  Odd metadata (a non-string tag or meta value, a weight that is not an int
>= 0) is left out rather than hiding the instance; Consul itself never sends it.
When two entries give the same instance, the later one in Consul's answer gives
its metadata.

An entry that cannot be turned into an instance (not an object, no usable
address, a port that is missing, not an integer or outside 1-65535) is skipped
with a warning naming it: one bad registration must not hide the good ones.
An answer that is not a list at all raises :class:`UnreadableAnswerError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kitsd.core.errors import InvalidInstanceError
from kitsd.sd.instance import join_host_port
from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo

__all__ = ["InfoMemo", "Memo", "UnreadableAnswerError", "entry_info", "entry_instance",
           "service_instances"]

logger = logging.getLogger(__name__)


class UnreadableAnswerError(ValueError):
    """The health endpoint answered something that is not a list of entries.

    Raised by :func:`service_instances`; the watcher reports it as
    :class:`kitsd.core.errors.RegistryUnavailableError` (chained with ``from``).
    """


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def entry_instance(entry: object) -> str:
    """The ``host:port`` instance of one health entry.

    Raises :class:`kitsd.core.errors.InvalidInstanceError` (a ``ValueError``) saying what
    is wrong with the entry.
    """
    if not isinstance(entry, Mapping):
        raise InvalidInstanceError(entry, "a health entry must be a JSON object")
    service = entry.get("Service")
    node = entry.get("Node")
    if not isinstance(service, Mapping):
        raise InvalidInstanceError(entry, "no Service object")
    address = _text(service.get("Address"))
    if not address and isinstance(node, Mapping):
        address = _text(node.get("Address"))
    if not address:
        raise InvalidInstanceError(entry, "neither Service.Address nor Node.Address is set")
    port = service.get("Port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidInstanceError(entry, f"Service.Port {port!r} is not an integer")
    return join_host_port(address, port)


InfoMemo = dict[tuple[object, object, int], InstanceInfo]
"""Raw ``(Service.Tags, Service.Meta items, weight)`` -> the :class:`InstanceInfo` made
of them, so an entry whose metadata was seen before costs a dict look-up, and entries
with the same metadata (most of a service's) share one object."""

_DEFAULT_WEIGHTS = {"Passing": 1, "Warning": 1}


def _weight(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _all_passing(entry: Mapping[str, Any]) -> bool:
    checks = entry.get("Checks")
    if not isinstance(checks, list):
        return True
    return all(not isinstance(check, Mapping) or check.get("Status", "passing") == "passing"
               for check in checks)


def _entry_weight(entry: Mapping[str, Any], weights: object) -> int:
    if not isinstance(weights, Mapping) or weights == _DEFAULT_WEIGHTS:
        return 1
    passing = _weight(weights.get("Passing"))
    warning = _weight(weights.get("Warning"))
    weight = passing if passing is not None else 1
    if warning is not None and warning != weight and not _all_passing(entry):
        weight = warning
    return weight


def entry_info(entry: object, memo: InfoMemo | None = None) -> InstanceInfo:
    """The :class:`InstanceInfo` of one health entry (see the module docstring); never
    raises.  ``memo`` (kept by the caller between answers) makes a repeated entry cost
    a look-up, keyed by its raw metadata."""
    # ``type() is dict`` first: decoded JSON is made of dicts, and ABC checks cost
    if type(entry) is not dict and not isinstance(entry, Mapping):
        return DEFAULT_INFO
    service = entry.get("Service")
    if type(service) is not dict and not isinstance(service, Mapping):
        return DEFAULT_INFO
    raw_tags = service.get("Tags")
    raw_meta = service.get("Meta")
    weights = service.get("Weights")
    weight = 1 if weights == _DEFAULT_WEIGHTS or weights is None \
        else _entry_weight(entry, weights)
    if not raw_tags and not raw_meta and weight == 1:
        return DEFAULT_INFO
    key: tuple[object, object, int] | None = None
    if memo is not None:
        # The raw values as they came (tuples built in C); validated only on a miss.
        key = (tuple(raw_tags) if type(raw_tags) is list else None,
               tuple(raw_meta.items()) if type(raw_meta) is dict else None, weight)
        try:
            known = memo.get(key)
        except TypeError:  # something unhashable inside: not worth remembering
            key, known = None, None
        if known is not None:
            return known
    tags = tuple(tag for tag in raw_tags if isinstance(tag, str)) \
        if isinstance(raw_tags, list) else ()
    meta = {name: value for name, value in raw_meta.items()
            if isinstance(name, str) and isinstance(value, str)} \
        if isinstance(raw_meta, Mapping) else {}
    info = InstanceInfo(weight, tags, meta) if tags or meta or weight != 1 else DEFAULT_INFO
    if memo is not None and key is not None:
        memo[key] = info
    return info


def _tags_of(entry: Mapping[str, object]) -> frozenset[str]:
    service = entry.get("Service")
    tags = service.get("Tags") if isinstance(service, Mapping) else None
    if not isinstance(tags, list):
        return frozenset()
    return frozenset(tag for tag in tags if isinstance(tag, str))


def _describe(entry: object) -> str:
    if isinstance(entry, Mapping):
        service = entry.get("Service")
        if isinstance(service, Mapping) and isinstance(service.get("ID"), str):
            return f"service ID {service['ID']!r}"
    text = repr(entry)
    return text if len(text) <= 200 else text[:197] + "..."


Memo = dict[tuple[Any, ...], tuple[str, InstanceInfo | None]]
"""The raw fields of a well-formed entry (see :func:`_memoisable`) -> its checked
instance and :class:`InstanceInfo` (``None`` if it was not asked for), kept by the
caller between answers."""

_ODD = object()  # in a memo key: a field of a type the key cannot stand for


def service_instances(
    entries: object,
    *,
    required_tags: Sequence[str] = (),
    source: str = "consul",
    memo: Memo | None = None,
    ordered: bool = True,
    infos: dict[str, InstanceInfo] | None = None,
    info_memo: InfoMemo | None = None,
) -> tuple[str, ...]:
    """Sorted, de-duplicated instances of a health answer (see the module docstring).

    ``entries`` is the decoded JSON body (all of it, or the fields
    :mod:`sd.consul.decode` keeps): a list of entries, or ``None`` (what
    py-consul returns for a 404), which counts as no instances.  Entries lacking
    any of ``required_tags`` are dropped; invalid entries are skipped with a
    warning naming ``source``.  ``memo``: a dict the caller keeps between
    answers (see :data:`Memo`), so that an entry seen before costs one dict
    look-up instead of a parse; it is emptied when it holds more than twice
    the entries of an answer, so it stays bounded.  ``ordered=False`` leaves
    the de-duplicated instances in no particular order (for a caller that
    sorts them anyway, as :class:`sd.instancer.Broadcaster` does).  ``infos``:
    a dict to fill with the non-default :class:`InstanceInfo` of the instances
    (:func:`entry_info`; ``info_memo`` shares equal ones between answers).  Raises
    :class:`UnreadableAnswerError` if ``entries`` is neither a list nor ``None``.
    """
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise UnreadableAnswerError(
            f"health answer is a {type(entries).__name__}, not a list of entries"
        )
    cache = memo if memo is not None else {}
    get = cache.get
    found: set[str] = set()
    add = found.add
    wanted = frozenset(required_tags)
    answer: Iterable[Any] = _matching(entries, wanted) if wanted else entries
    for entry in answer:
        # At 10,000 entries per answer, a function call or an isinstance per entry
        # shows: the memo look-up of a well-formed entry is inline (_memoisable's rules).
        key: tuple[Any, ...] | None
        try:
            service = entry["Service"]
            address = service["Address"] or entry["Node"]["Address"]
            tags, meta, weights = service.get("Tags"), service.get("Meta"), \
                service.get("Weights")
            key = (address, service["Port"],
                   tuple(tags) if type(tags) is list else _ODD if tags is not None else None,
                   tuple(meta.items()) if type(meta) is dict else
                   _ODD if meta is not None else None,
                   None if weights is None or weights == _DEFAULT_WEIGHTS
                   else _weights_key(entry, weights))
            known = get(key) if type(key[1]) is int else None
        except (KeyError, TypeError, AttributeError, IndexError):
            key, known = None, None
        if known is None:
            try:
                instance = entry_instance(entry)
            except InvalidInstanceError as error:
                logger.warning("skipping %s from %s: %s", _describe(entry), source, error.reason)
                continue
            known = (instance, entry_info(entry, info_memo) if infos is not None else None)
            if key is not None and _memoisable(key):
                cache[key] = known
        instance, info = known
        add(instance)
        if infos is None:
            continue
        if info is None:  # memoised by a call that wanted no metadata
            info = entry_info(entry, info_memo)
        if info is not DEFAULT_INFO:
            infos[instance] = info
        elif instance in infos:  # a later entry of the same instance has the defaults
            del infos[instance]
    if len(cache) > 2 * len(entries) + 64:
        cache.clear()
    if info_memo is not None and len(info_memo) > 2 * len(entries) + 64:
        info_memo.clear()
    return tuple(sorted(found)) if ordered else tuple(found)


def _weights_key(entry: Any, weights: object) -> object:
    """The part of the memo key for non-default ``Service.Weights``: the weight
    :func:`entry_info` gives them (it reads the entry's checks)."""
    return ("weight", _entry_weight(entry, weights))


def _memoisable(key: tuple[Any, ...]) -> bool:
    """Whether an entry's raw key may stand for it in the memo.

    The key is ``(address, Service.Port, Service.Tags, Service.Meta, weight part)``
    as they came, where ``address`` is ``Service.Address`` or, when that is empty,
    ``Node.Address``.  It decides the entry's instance and metadata only when the
    types are exact: the address a ``str`` that is not blank (a blank one falls back
    to the node's address, which the key does not hold), the port an ``int`` (a
    memoised 1 must never stand for ``True`` or ``1.0``, which hash alike), tags a
    tuple made from a list or ``None``, meta items from a dict or ``None``; anything
    else is parsed every time.
    """
    address, port, tags, meta, _ = key
    return (type(address) is str and bool(address.strip()) and type(port) is int
            and tags is not _ODD and meta is not _ODD)


def _matching(entries: Iterable[object], wanted: frozenset[str]) -> Iterable[object]:
    for entry in entries:
        if wanted and isinstance(entry, Mapping) and not wanted <= _tags_of(entry):
            continue
        yield entry
