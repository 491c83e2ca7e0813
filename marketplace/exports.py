"""Statement exports: a user's wallet entries for a period as CSV."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Sequence

from django.http import HttpResponse

from marketplace.selectors import StatementLine

STATEMENT_COLUMNS = ("date", "kind", "reference", "amount", "balance_after")


def statement_csv(lines: Sequence[StatementLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(STATEMENT_COLUMNS)
    for line in lines:
        writer.writerow(
            [
                line.date.isoformat(timespec="seconds"),
                line.kind,
                line.reference,
                line.amount,
                line.balance_after,
            ]
        )
    return out.getvalue()


def statement_response(
    lines: Sequence[StatementLine], start: datetime.date, end: datetime.date
) -> HttpResponse:
    response = HttpResponse(statement_csv(lines), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="atelier-statement-{start.isoformat()}-{end.isoformat()}.csv"'
    )
    return response
