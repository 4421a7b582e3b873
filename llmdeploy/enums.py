"""The closed vocabularies of llmdeploy: hosting modes, pricing terms, EC2 instance states.

Each is a ``StrEnum``: a member *is* its string value (``Mode.ASYNC == "async"``, ``f"{Mode.ASYNC}"`` is
``async``, ``json.dumps`` writes ``"async"``), so stack files, ``--json`` output, tags and CLI choices carry the
same strings as before, while the code names the member and the labels and groupings live here once.
A YAML writer needs the plain string (``.value``): PyYAML's safe dumper represents exact types only.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How a model is hosted. Declaration order is the tie-break between equally priced options."""

    RESERVED = "reserved"  # self-hosted on EC2 behind a load balancer, always on
    REALTIME = "realtime"  # SageMaker real-time endpoint
    ASYNC = "async"  # SageMaker asynchronous endpoint: answers through S3, scales to zero
    SERVERLESS = "serverless"  # SageMaker serverless endpoint: CPUs only, billed per request

    @property
    def label(self) -> str:
        """Where it runs, for sentences ("no SageMaker async instance can host it")."""
        return _MODE_LABELS[self]

    @property
    def on_sagemaker(self) -> bool:
        """A SageMaker endpoint (``ml.*`` instance types, or none for serverless); reserved runs on EC2."""
        return self is not Mode.RESERVED

    @property
    def has_instances(self) -> bool:
        """Billed per instance-hour of a chosen instance type (every mode but serverless)."""
        return self is not Mode.SERVERLESS

    @property
    def ml_instances(self) -> bool:
        """A SageMaker endpoint on ``ml.*`` instances it scales (realtime, async), billed per instance-hour."""
        return self in (Mode.REALTIME, Mode.ASYNC)


_MODE_LABELS = {
    Mode.RESERVED: "EC2",
    Mode.REALTIME: "SageMaker real-time",
    Mode.ASYNC: "SageMaker async",
    Mode.SERVERLESS: "SageMaker serverless",
}


class Term(StrEnum):
    """How EC2 instances of the reserved mode are paid for."""

    ON_DEMAND = "on-demand"
    ONE_YEAR = "1y"  # Standard Reserved Instance, 1 year, no upfront
    THREE_YEARS = "3y"  # the same for 3 years

    @property
    def label(self) -> str:
        """"on-demand", "1-year RI", "3-year RI"."""
        return _TERM_LABELS[self]

    @property
    def price_field(self) -> str:
        """The field of a catalog EC2 row (``ec2_prices.toml``) that holds this term's hourly price."""
        return _TERM_FIELDS[self]

    @classmethod
    def of_price_field(cls, name: str) -> Term:
        """The term whose hourly price a catalog field (``ri_1y``) holds."""
        return next(term for term, field in _TERM_FIELDS.items() if field == name)


_TERM_LABELS = {Term.ON_DEMAND: "on-demand", Term.ONE_YEAR: "1-year RI", Term.THREE_YEARS: "3-year RI"}
_TERM_FIELDS = {Term.ON_DEMAND: "on_demand", Term.ONE_YEAR: "ri_1y", Term.THREE_YEARS: "ri_3y"}


class InstanceState(StrEnum):
    """EC2 instance states (``State.Name`` of DescribeInstances), in their lifecycle order."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"

    @property
    def billed(self) -> bool:
        """Whether the instance is (still) billed for compute in this state (a stopped one pays its storage only)."""
        return self in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING, InstanceState.SHUTTING_DOWN)

    @property
    def going(self) -> bool:
        """Terminated, or on its way there: nothing to terminate any more."""
        return self in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED)


# Values for an ``instance-state-name`` filter of DescribeInstances.
NOT_TERMINATED_STATES = tuple(s.value for s in InstanceState if s is not InstanceState.TERMINATED)
LIVE_STATES = tuple(s.value for s in InstanceState if not s.going)  # pending, running, stopping, stopped


def is_billed(state: str) -> bool:
    """Whether EC2 bills compute for an instance in the state named (a name this code does not know: not assumed)."""
    return state in _BILLED


def is_going(state: str) -> bool:
    """Whether the state named is terminated or on its way there."""
    return state in _GOING


_BILLED = frozenset(s for s in InstanceState if s.billed)
_GOING = frozenset(s for s in InstanceState if s.going)
