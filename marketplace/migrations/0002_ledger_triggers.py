"""PostgreSQL guards for the ledger: append-only rows, and entries that sum to zero.

The sum check is a deferred constraint trigger: it runs at commit, once the whole transaction
has been written, and refuses a commit that leaves any ledger transaction unbalanced.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION marketplace_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only (% on %)', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER marketplace_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON marketplace_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_append_only();
CREATE TRIGGER marketplace_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON marketplace_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_append_only();

CREATE OR REPLACE FUNCTION marketplace_ledger_balanced() RETURNS trigger AS $$
DECLARE
    total numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO total
        FROM marketplace_ledgerentry WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero (%)',
            NEW.transaction_id, total;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER marketplace_ledgerentry_balanced
    AFTER INSERT ON marketplace_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_balanced();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS marketplace_ledgerentry_balanced ON marketplace_ledgerentry;
DROP FUNCTION IF EXISTS marketplace_ledger_balanced();
DROP TRIGGER IF EXISTS marketplace_ledgerentry_append_only ON marketplace_ledgerentry;
DROP TRIGGER IF EXISTS marketplace_ledgertransaction_append_only
    ON marketplace_ledgertransaction;
DROP FUNCTION IF EXISTS marketplace_ledger_append_only();
"""


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
