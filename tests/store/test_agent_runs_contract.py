"""Agent runs and delegation chains survive the store: a task's run and a lease's actor
chain read back as written, and only runs are listed as runs, on every backend."""

from __future__ import annotations

import datetime as dt

from tether.model import AgentRun, Lease, LeaseState, Task, TaskStatus
from tether.store import LeaseFilter, Store, TaskFilter

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _task(task_id: str, run: AgentRun | None) -> Task:
    return Task(
        id=task_id,
        identity_id="support-agent",
        name="ticket-7",
        status=TaskStatus.ACTIVE,
        created_at=T0,
        deadline=T0 + dt.timedelta(hours=1),
        run=run,
    )


def test_a_run_and_a_delegation_chain_read_back_as_written(store: Store) -> None:
    run = AgentRun(
        purpose="answer ticket 7",
        tools=("orders-api-read",),
        resources=("https://orders.example.com",),
        data_classes=("pii",),
        principal="person:alice",
        principal_expires_at=T0 + dt.timedelta(minutes=10),
        starts_at=T0,
        ends_at=T0 + dt.timedelta(minutes=30),
        max_credentials=3,
        max_audiences=1,
    )
    lease = Lease(
        id="lse_hop3",
        identity_id="support-agent",
        owner_id="team-payments",
        provider="jwt",
        issued_at=T0,
        expires_at=T0 + dt.timedelta(minutes=5),
        state=LeaseState.ACTIVE,
        task_id="tsk_run",
        actor="third-agent",
        delegation=("third-agent", "helper-agent"),
    )
    with store.transaction() as tx:
        tx.put_task(_task("tsk_run", run))
        tx.put_task(_task("tsk_plain", None))
        tx.insert_leases([lease])
    with store.read() as tx:
        assert tx.get_task("tsk_run") == _task("tsk_run", run)
        assert tx.get_task("tsk_plain") == _task("tsk_plain", None)
        assert [t.id for t in tx.list_tasks(TaskFilter(agent_runs=True))] == ["tsk_run"]
        assert len(tx.list_tasks(TaskFilter())) == 2
        (found,) = tx.find_leases(LeaseFilter(task_id="tsk_run"))
    assert found.delegation == ("third-agent", "helper-agent")
    assert found.act_claim() == {"sub": "third-agent", "act": {"sub": "helper-agent"}}
