"""PostgreSQL guards for earned credits, a second line behind marketplace.services.ledger:

- a payout request may debit only an earnings account (bought credits are not withdrawable);
- an earnings account may be credited only by an earning transfer: a purchase (seller, share,
  royalty), an escrow settlement (a data owner's pay, an earned refund), a rejected payout
  given back, or the opening split of migration 0007.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION marketplace_ledger_earned_credits() RETURNS trigger AS $$
DECLARE
    account_kind varchar;
    txn_kind varchar;
BEGIN
    SELECT kind INTO account_kind FROM marketplace_account WHERE id = NEW.account_id;
    SELECT kind INTO txn_kind FROM marketplace_ledgertransaction WHERE id = NEW.transaction_id;
    IF txn_kind = 'payout_request' AND NEW.amount < 0 AND account_kind <> 'earnings' THEN
        RAISE EXCEPTION 'a payout takes only earned credits (account % is %)',
            NEW.account_id, account_kind;
    END IF;
    IF account_kind = 'earnings' AND NEW.amount > 0 AND txn_kind NOT IN
            ('purchase', 'escrow_settle', 'payout_rejected', 'earnings_opening') THEN
        RAISE EXCEPTION 'a % transfer cannot credit earned credits (account %)',
            txn_kind, NEW.account_id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER marketplace_ledgerentry_earned_credits
    BEFORE INSERT ON marketplace_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_earned_credits();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS marketplace_ledgerentry_earned_credits ON marketplace_ledgerentry;
DROP FUNCTION IF EXISTS marketplace_ledger_earned_credits();
"""


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0007_earnings_opening")]

    operations = [migrations.RunPython(forward, backward)]
