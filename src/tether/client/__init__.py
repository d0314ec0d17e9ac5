"""Python client of the Tether API.

`TetherClient` speaks to a Tether server at `TETHER_ADDR` with `TETHER_TOKEN`. The CLI
is built on it; workloads use it to exchange attestation for credentials.
"""

from tether.client._http import ClientError, TetherClient
from tether.client._keys import BatchItem, DataKey, KeyClient
from tether.client._workload import (
    AgentRunAsk,
    ExchangeOptions,
    IssuedToken,
    Task,
    WorkloadClient,
    attestation_from_env,
)

__all__ = [
    "AgentRunAsk",
    "BatchItem",
    "ClientError",
    "DataKey",
    "ExchangeOptions",
    "IssuedToken",
    "KeyClient",
    "Task",
    "TetherClient",
    "WorkloadClient",
    "attestation_from_env",
]
