"""online/backend.py: both backends the holder may hand the service, ``serving.Serving`` (in
this process) and ``compute.RemoteServing`` (a compute process), have every member of the
``Backend`` protocol, with the same parameters: a method added to the protocol and to one
backend only fails here, not at the first request that reaches the other. (That the two
answer alike is tests/test_compute_process.py's.)"""

from __future__ import annotations

import inspect

import pytest

from groundrec.online.backend import Backend
from groundrec.online.compute import RemoteServing
from groundrec.online.serving import Serving


def _members(cls) -> dict[str, object]:
    names = {n for n in vars(cls) if not n.startswith("_")} | set(getattr(cls, "__annotations__", {}))
    return {n: inspect.getattr_static(cls, n, None) for n in names}


PROTOCOL = _members(Backend)


def test_the_protocol_names_what_the_service_calls():
    assert {"version_id", "alive", "threads", "answer", "item", "unknown", "set_popularity", "close"} <= set(PROTOCOL)


@pytest.mark.parametrize("backend", [Serving, RemoteServing], ids=lambda c: c.__name__)
def test_each_backend_has_every_member_with_the_same_parameters(backend):
    annotations = {n for c in backend.__mro__ for n in getattr(c, "__annotations__", {})}
    for name, member in PROTOCOL.items():
        if name == "version_id":  # a plain attribute: declared, or set by the constructor
            assert name in annotations or "self.version_id" in inspect.getsource(backend), name
            continue
        assert hasattr(backend, name), f"{backend.__name__} lacks {name}"
        if inspect.isfunction(member):
            mine = inspect.getattr_static(backend, name)
            assert inspect.isfunction(mine), f"{backend.__name__}.{name} is not a method"
            assert list(inspect.signature(mine).parameters) == list(inspect.signature(member).parameters), name
        else:  # a property on the protocol: a property or a class attribute on the backend
            assert not inspect.isfunction(inspect.getattr_static(backend, name)), f"{backend.__name__}.{name}"
