"""The node's privacy ledger: per-dataset budgets and what each job has spent (SQLite).

The data owner sets a budget (epsilon, delta) per dataset. Each job that trains on the
dataset has one accountant spanning all its rounds; the ledger keeps, per (dataset, job), the
epsilon that accountant has reached, the job's delta and the accountant state itself. Jobs
compose sequentially: a dataset's spend is the sum of its jobs' epsilons and deltas (basic
composition), and a call is refused if the epsilon it WILL reach (computed from the accountant
before any step runs) would take that sum past the budget.

The ledger, not the server, is the source of truth for a job's accountant state, so a server
that sends back an empty or stale state cannot reset the privacy spend.

The dataset key is chosen by the node (its name for the dataset), not derived from the
content: adding one image must not give the dataset a fresh budget.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from federated.engine.errors import BudgetExceededError, BudgetNotSetError, ConfigError

__all__ = ["Budget", "JobSpend", "PrivacyLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (
    dataset TEXT PRIMARY KEY,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spends (
    dataset TEXT NOT NULL,
    job TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    steps INTEGER NOT NULL,
    accountant_state BLOB,
    updated_at REAL NOT NULL,
    PRIMARY KEY (dataset, job)
);
"""
# Rounding slack when comparing a float epsilon with the budget.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Budget:
    epsilon: float
    delta: float


@dataclass(frozen=True)
class JobSpend:
    job: str
    epsilon: float
    delta: float
    steps: int
    accountant_state: bytes | None


class PrivacyLedger:
    """Budgets and spends in one SQLite file; safe for several processes on one node."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: check-then-charge is atomic
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def set_budget(self, dataset: str, *, epsilon: float, delta: float) -> None:
        """Set (or change) a dataset's total budget. Lowering it below the spend is allowed:
        every later call is then refused."""
        if epsilon <= 0 or not 0 < delta < 1:
            raise ConfigError("a budget needs epsilon > 0 and 0 < delta < 1")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO budgets (dataset, epsilon, delta, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(dataset) DO UPDATE SET epsilon = excluded.epsilon, "
                "delta = excluded.delta, updated_at = excluded.updated_at",
                (dataset, float(epsilon), float(delta), time.time()),
            )

    def budget(self, dataset: str) -> Budget | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT epsilon, delta FROM budgets WHERE dataset = ?", (dataset,)
            ).fetchone()
        return Budget(*row) if row else None

    def spends(self, dataset: str) -> list[JobSpend]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT job, epsilon, delta, steps, accountant_state FROM spends "
                "WHERE dataset = ? ORDER BY job",
                (dataset,),
            ).fetchall()
        return [JobSpend(job, eps, delta, steps, state) for job, eps, delta, steps, state in rows]

    def job_spend(self, dataset: str, job: str) -> JobSpend | None:
        return next((s for s in self.spends(dataset) if s.job == job), None)

    def spent(self, dataset: str) -> Budget:
        """Total (epsilon, delta) spent on a dataset by all its jobs."""
        spends = self.spends(dataset)
        return Budget(sum(s.epsilon for s in spends), sum(s.delta for s in spends))

    def remaining(self, dataset: str) -> Budget | None:
        budget = self.budget(dataset)
        if budget is None:
            return None
        spent = self.spent(dataset)
        return Budget(budget.epsilon - spent.epsilon, budget.delta - spent.delta)

    def check(self, dataset: str, job: str, *, epsilon_after: float, delta: float) -> None:
        """Raise unless the job may reach ``epsilon_after`` at ``delta`` on this dataset."""
        with self._connect() as db:
            self._check(db, dataset, job, epsilon_after=epsilon_after, delta=delta)

    def _check(
        self, db: sqlite3.Connection, dataset: str, job: str, *, epsilon_after: float, delta: float
    ) -> None:
        row = db.execute(
            "SELECT epsilon, delta FROM budgets WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise BudgetNotSetError(
                f"no privacy budget is set for dataset {dataset!r}; the owner must set one first",
                details={"dataset": dataset},
            )
        budget = Budget(*row)
        others = db.execute(
            "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM spends "
            "WHERE dataset = ? AND job != ?",
            (dataset, job),
        ).fetchone()
        total_epsilon = float(others[0]) + epsilon_after
        total_delta = float(others[1]) + delta
        details = {
            "dataset": dataset,
            "job": job,
            "budget_epsilon": budget.epsilon,
            "budget_delta": budget.delta,
            "other_jobs_epsilon": float(others[0]),
            "epsilon_after": epsilon_after,
        }
        if total_epsilon > budget.epsilon + _TOLERANCE:
            raise BudgetExceededError(
                f"this call would bring dataset {dataset!r} to epsilon {total_epsilon:.4g}, "
                f"over its budget of {budget.epsilon:.4g}; nothing was trained",
                details=details,
            )
        if total_delta > budget.delta * (1 + 1e-9):
            raise BudgetExceededError(
                f"this call would bring dataset {dataset!r} to delta {total_delta:.3g}, over its "
                f"budget of {budget.delta:.3g}; nothing was trained",
                details=details,
            )

    def charge(
        self,
        dataset: str,
        job: str,
        *,
        epsilon_after: float,
        delta: float,
        steps: int,
        accountant_state: bytes,
    ) -> None:
        """Check and record, in one transaction, that the job reaches ``epsilon_after``.

        Called before the steps run (with the projected epsilon), so a round that crashes
        half-way is still counted as spent.
        """
        with self._transaction() as db:
            self._check(db, dataset, job, epsilon_after=epsilon_after, delta=delta)
            previous = db.execute(
                "SELECT epsilon FROM spends WHERE dataset = ? AND job = ?", (dataset, job)
            ).fetchone()
            if previous is not None and epsilon_after + _TOLERANCE < previous[0]:
                raise ConfigError(
                    f"job {job!r} already reached epsilon {previous[0]:.4g} on {dataset!r}; "
                    "an accountant never goes back"
                )
            db.execute(
                "INSERT INTO spends (dataset, job, epsilon, delta, steps, accountant_state, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(dataset, job) DO UPDATE "
                "SET epsilon = excluded.epsilon, delta = excluded.delta, steps = excluded.steps, "
                "accountant_state = excluded.accountant_state, updated_at = excluded.updated_at",
                (
                    dataset,
                    job,
                    float(epsilon_after),
                    float(delta),
                    int(steps),
                    accountant_state,
                    time.time(),
                ),
            )
