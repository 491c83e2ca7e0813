"""Split each existing wallet into bought credits (stay in the wallet) and earned credits (move
to the user's new earnings account), one ledger transaction per user.

Earned = what the user earned (their part of purchases, escrow payouts) minus what they asked
to be paid out (rejected requests given back), at most their balance and never below zero: the
credits they spent are counted as bought first, as spending does from now on. Reversing moves
every earned credit back into the wallet (the ledger is append-only: a new transaction).
"""

from django.db import migrations
from django.db.models import Q, Sum

EARNING = (Q(transaction__kind="purchase", memo__in=("seller", "share", "royalty"))
           | Q(transaction__kind="escrow_settle", memo="payout"))
PAYOUT_KINDS = ("payout_request", "payout_rejected")


def _account(Account, owner_id, kind):  # type: ignore[no-untyped-def]
    account = Account.objects.filter(kind=kind, owner_id=owner_id).first()
    if account is None:
        account = Account.objects.create(kind=kind, owner_id=owner_id, code=f"{kind}:{owner_id}")
    return account


def _move(apps, source, target, amount, kind):  # type: ignore[no-untyped-def]
    Account = apps.get_model("marketplace", "Account")
    LedgerTransaction = apps.get_model("marketplace", "LedgerTransaction")
    LedgerEntry = apps.get_model("marketplace", "LedgerEntry")
    txn = LedgerTransaction.objects.create(kind=kind, reference=f"{source.code} -> {target.code}")
    LedgerEntry.objects.create(transaction=txn, account=source, amount=-amount, memo=kind)
    LedgerEntry.objects.create(transaction=txn, account=target, amount=amount, memo=kind)
    Account.objects.filter(pk=source.pk).update(balance=source.balance - amount)
    Account.objects.filter(pk=target.pk).update(balance=target.balance + amount)


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    Account = apps.get_model("marketplace", "Account")
    LedgerEntry = apps.get_model("marketplace", "LedgerEntry")
    for wallet in Account.objects.filter(kind="wallet", balance__gt=0).order_by("pk"):
        entries = LedgerEntry.objects.filter(account_id=wallet.pk)
        earned = entries.filter(EARNING, amount__gt=0).aggregate(t=Sum("amount"))["t"] or 0
        paid_out = entries.filter(transaction__kind__in=PAYOUT_KINDS).aggregate(
            t=Sum("amount"))["t"] or 0  # negative: requested, less what was given back
        amount = max(0, min(wallet.balance, earned + paid_out))
        if amount:
            earnings = _account(Account, wallet.owner_id, "earnings")
            _move(apps, wallet, earnings, amount, "earnings_opening")


def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    Account = apps.get_model("marketplace", "Account")
    for earnings in Account.objects.filter(kind="earnings", balance__gt=0).order_by("pk"):
        wallet = _account(Account, earnings.owner_id, "wallet")
        _move(apps, earnings, wallet, earnings.balance, "earnings_closing")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0006_earnings_accounts")]

    operations = [migrations.RunPython(forward, backward)]
