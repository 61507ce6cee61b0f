"""Connecting to a Ray cluster, once, for every ``--engine ray`` command.

Why one place: the commands must agree on what ``--address`` means (an existing cluster, ``auto`` for the one this
machine belongs to, or none for a local cluster started for this run and stopped after it), and on the one-line error
when the ``ray`` extra is missing or the cluster cannot be reached.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from ferkit.errors import UserInputError, missing_extra

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def import_ray(what: str) -> Any:
    """The ``ray`` module, or the one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", what) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, what: str, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected for the duration of one command; yields the ``ray`` module.

    ``address=None`` starts a local cluster on loopback sized to this machine (or ``num_cpus``) and shuts it down
    afterwards; any other address (``auto``, ``ray://host:10001``, ``host:6379``) joins an existing cluster and leaves
    it running. A cluster already initialised in this process (a notebook, a test) is reused as is.
    """
    ray = import_ray(what)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              # ferkit's own modules must reach the workers when ferkit runs from a source tree
                              "runtime_env": {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}}}
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise UserInputError(f"{what}: cannot connect to {where} ({str(exc).splitlines()[0] if str(exc) else exc})"
                             ) from None
    try:
        yield ray
    finally:
        ray.shutdown()
