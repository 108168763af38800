"""``k8s://`` URLs, for :func:`sd.instancer_from_url` and transport templates.

::

    k8s://[namespace/]service[:port][?context=NAME&kubeconfig=PATH]

    k8s://web                      Service web, the configuration's namespace, its only port
    k8s://shop/web:http            Service web in namespace shop, port named http
    k8s://shop/web:8080            ... the endpoints' port 8080 (the pods' target port)
    k8s://default/{service}:http   a transport template: the request's host is the Service

* ``namespace``: the Service's namespace; without it, the configuration's (the
  pod's own namespace in a cluster, the kubeconfig context's namespace, else
  ``default``), as kubectl does.
* ``port``: a Service port name or the endpoints' port number; a Service with one
  port needs none.
* ``context``: a kubeconfig context other than the current one; ``kubeconfig``: a
  kubeconfig file other than ``$KUBECONFIG``/``~/.kube/config``.  Without
  either, :meth:`sd.k8s.ClusterConfig.load` picks (``$KUBECONFIG``, in-cluster,
  ``~/.kube/config``).

Credentials never go in the URL (a URL ends up in logs and shell history): a
URL with a ``user@`` part, a ``token=`` or any other unknown parameter is
refused, and error messages show it through :func:`sd.url.shown_url`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from kitsd.core.errors import MisuseError
from kitsd.sd.instancer import DEFAULT_FIRST_ANSWER_TIMEOUT
from kitsd.sd.k8s.config import ClusterConfig
from kitsd.sd.k8s.instancer import EndpointSliceInstancer, check_port
from kitsd.sd.url import shown_parameter, shown_url

__all__ = ["K8sURL", "instancer_from_url", "parse_url"]

_KNOWN = {"context", "kubeconfig"}


@dataclass(frozen=True, slots=True)
class K8sURL:
    """What a ``k8s://`` URL says."""

    service: str
    namespace: str | None = None
    port: str | int | None = None
    context: str | None = None
    kubeconfig: str | None = None


def parse_url(parsed: urllib.parse.SplitResult) -> K8sURL:
    """The settings in a ``k8s://`` URL, checked (the Service and namespace names are
    checked by the instancer).  Raises :class:`kitsd.core.errors.MisuseError` saying
    what is wrong, never echoing a credential."""
    shown = shown_url(parsed)
    if parsed.scheme.lower() != "k8s":
        raise MisuseError(f"not a k8s:// URL: {shown}")
    if "@" in parsed.netloc:
        raise MisuseError(f"credentials do not belong in a k8s:// URL ({shown}): they come "
                          "from the kubeconfig or the pod's service account")
    if parsed.fragment:
        raise MisuseError(f"a k8s:// URL has no #fragment: {shown}")
    body = urllib.parse.unquote(parsed.netloc + parsed.path)
    namespace: str | None
    namespace, slash, rest = body.rpartition("/")
    if not slash:
        namespace = None
    elif not namespace or "/" in namespace:
        raise MisuseError(f"a k8s:// URL is k8s://[namespace/]service[:port], not {shown}")
    service, colon, port_text = rest.partition(":")
    if not service:
        raise MisuseError(f"a k8s:// URL names a Service, as k8s://default/web:http: {shown}")
    port: str | int | None = None
    if colon:
        if not port_text:
            raise MisuseError(f"empty port in {shown}")
        port = int(port_text) if port_text.isdigit() else port_text
        try:
            check_port(port)
        except ValueError as error:
            raise MisuseError(f"{error} in {shown}") from None
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted({shown_parameter(name) for name in set(query) - _KNOWN})
    if unknown:
        hint = "; tokens come from the kubeconfig or the service account" \
            if "token" in unknown else ""
        raise MisuseError(f"unknown k8s:// URL parameter(s) {unknown} in {shown} "
                          f"(known: {sorted(_KNOWN)}{hint})")
    single: dict[str, str | None] = {}
    for name in _KNOWN:
        values = query.get(name, [])
        if len(values) > 1 or any(not value.strip() for value in values):
            raise MisuseError(f"{name} must be given at most once, not empty, in {shown}")
        single[name] = values[0] if values else None
    return K8sURL(service=service, namespace=namespace, port=port,
                  context=single["context"], kubeconfig=single["kubeconfig"])


def instancer_from_url(
    parsed: urllib.parse.SplitResult, *,
    first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
) -> EndpointSliceInstancer:
    """An :class:`EndpointSliceInstancer` for a parsed ``k8s://`` URL (see the module
    docstring; ``first_answer_timeout`` as for the instancer).  Raises
    :class:`kitsd.core.errors.MisuseError` for a URL or a configuration it cannot use;
    API server failures arrive as error events."""
    settings = parse_url(parsed)
    config = ClusterConfig.load(context=settings.context, kubeconfig=settings.kubeconfig)
    return EndpointSliceInstancer(settings.service, namespace=settings.namespace,
                                  port=settings.port, config=config,
                                  first_answer_timeout=first_answer_timeout)
