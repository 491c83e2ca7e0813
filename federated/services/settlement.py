"""Money of a job: the maximum cost held at launch, what each dataset earned by participation,
and the one settlement of the escrow (owners, platform fee, refund to the trainer)."""

from __future__ import annotations

from collections import defaultdict

from django.contrib.auth import get_user_model
from django.utils import timezone

from federated.models import DatasetTerms, FederatedJob, JobDataset
from marketplace.revenue_split import BPS
from marketplace.services.ledger import escrow_settle


def dataset_max_cost(
    *, price_per_example_round: int, price_per_job: int, examples: int, rounds: int
) -> int:
    """What a dataset can earn in a job: its per-job price, or price x examples x rounds."""
    if price_per_job > 0:
        return price_per_job
    return price_per_example_round * examples * rounds


def terms_max_cost(*, terms: DatasetTerms, rounds: int) -> int:
    return dataset_max_cost(
        price_per_example_round=terms.price_per_example_round,
        price_per_job=terms.price_per_job,
        examples=terms.dataset_version.image_count,
        rounds=rounds,
    )


def fee_for(amount: int, fee_bps: int) -> int:
    """The platform fee on what owners are paid (rounded down)."""
    return amount * fee_bps // BPS


def dataset_earned(*, job_dataset: JobDataset, rounds: int) -> int:
    """What a dataset earned: the examples its node trained on in the rounds it completed
    (each round's examples capped by the manifest count), or its share of a per-job price by
    rounds completed. Never more than its maximum."""
    jd = job_dataset
    if jd.release_vetoed:  # its node vetoed the release: a veto is not free (services.release)
        return 0
    if jd.price_per_job > 0:
        done = min(jd.rounds_completed, rounds)
        earned = jd.price_per_job * done // rounds if rounds else 0
    else:
        earned = jd.price_per_example_round * jd.example_rounds
    return max(0, min(earned, jd.max_cost))


def job_settle(*, job: FederatedJob) -> FederatedJob:
    """Pay owners what their datasets earned, the fee, and refund the rest, once.

    The caller holds the job's row lock (``select_for_update``) inside a transaction; the
    escrow hold and then the ledger accounts are locked by ``escrow_settle``.
    """
    if job.settled_at is not None:
        return job
    rows = list(job.datasets.select_related("dataset_version__dataset").order_by("pk"))
    per_owner: dict[int, int] = defaultdict(int)
    for jd in rows:
        jd.earned = dataset_earned(job_dataset=jd, rounds=job.num_rounds)
        JobDataset.objects.filter(pk=jd.pk).update(earned=jd.earned)
        if jd.earned:
            per_owner[jd.dataset_version.dataset.owner_id] += jd.earned
    paid = sum(per_owner.values())
    fee = fee_for(paid, job.fee_bps)
    if job.escrow is not None:
        users = get_user_model().objects.in_bulk(list(per_owner))
        txn = escrow_settle(
            escrow_hold=job.escrow,
            payouts=[(users[uid], amount) for uid, amount in sorted(per_owner.items())],
            fee=fee,
        )
        job.escrow.refresh_from_db()
        job.settlement = txn
        job.refunded = job.escrow.amount - paid - fee
    else:  # nothing was held: nothing can have been earned
        paid = fee = 0
    job.owners_paid = paid
    job.fee_paid = fee
    job.settled_at = timezone.now()
    job.save(
        update_fields=[
            "settlement",
            "refunded",
            "owners_paid",
            "fee_paid",
            "settled_at",
            "updated_at",
        ]
    )
    return job
