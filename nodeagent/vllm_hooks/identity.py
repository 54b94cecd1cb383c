"""Which workflow, tenant and agent template a vLLM request belongs to.

The node agent tags every call it sends: ``SamplingParams.extra_args`` (the OpenAI server's
``vllm_xargs``) carries ``saga_workflow``, ``saga_tenant`` and ``saga_template``; a client that
only sets vLLM's own ``session_id`` (header ``X-Session-ID``) gets that as its workflow. We never
use ``cache_salt`` as a tag: it changes block hashes and would stop workflows sharing prefixes.

A request with no tag is a one-call workflow of its own (id = request id, tenant ``default``):
that is how SAGA sees plain vLLM traffic, and how vLLM's own test-suite traffic is scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

WORKFLOW_KEY = "saga_workflow"
TENANT_KEY = "saga_tenant"
TEMPLATE_KEY = "saga_template"
DEFAULT_TENANT = "default"
DEFAULT_TEMPLATE = "default"
UNTAGGED_TEMPLATE = "untagged"


class RequestTagError(ValueError):
    """A SAGA tag on a request has the wrong type; ``field`` names the tag."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class _SamplingParamsLike(Protocol):
    extra_args: dict[str, Any] | None


class RequestLike(Protocol):
    """The part of ``vllm.v1.request.Request`` this module reads."""

    request_id: str
    session_id: str | None
    sampling_params: _SamplingParamsLike | None


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """Who a request works for. ``tagged`` is False for plain vLLM requests (one-call workflows)."""

    workflow_id: str
    tenant: str
    template: str
    tagged: bool


def _tag(extra: dict[str, Any], key: str) -> str | None:
    value = extra.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RequestTagError(
            f"extra_args[{key!r}] must be a non-empty string, got {value!r}", field=key
        )
    return value


def identify(request: RequestLike) -> RequestIdentity:
    """Read the tags of ``request``; raises :class:`RequestTagError` on a malformed tag."""
    params = request.sampling_params
    extra = params.extra_args if params is not None and params.extra_args else {}
    workflow = _tag(extra, WORKFLOW_KEY)
    if workflow is None:
        session = getattr(request, "session_id", None)
        workflow = session if isinstance(session, str) and session else None
    tenant = _tag(extra, TENANT_KEY) or DEFAULT_TENANT
    template = _tag(extra, TEMPLATE_KEY)
    if workflow is None:
        return RequestIdentity(
            workflow_id=request.request_id,
            tenant=tenant,
            template=template or UNTAGGED_TEMPLATE,
            tagged=False,
        )
    return RequestIdentity(
        workflow_id=workflow, tenant=tenant, template=template or DEFAULT_TEMPLATE, tagged=True
    )
