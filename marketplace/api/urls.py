"""The marketplace's REST API routes, under ``/api/v1/`` (``marketplace/urls.py``; the
``marketplace`` namespace)."""

from django.urls import path

from marketplace.api import licenses, listings, payouts, purchases, reports, reviews, wallet

urlpatterns = [
    path("wallet", wallet.WalletDetailApi.as_view(), name="wallet"),
    path(
        "wallet/transactions",
        wallet.WalletTransactionListApi.as_view(),
        name="wallet-transactions",
    ),
    path("wallet/top-ups", wallet.TopUpCreateApi.as_view(), name="top-up-create"),
    path("wallet/statement", wallet.WalletStatementApi.as_view(), name="wallet-statement"),
    path("payouts", payouts.PayoutListCreateApi.as_view(), name="payout-list"),
    path(
        "payouts/<int:payout_id>/paid",
        payouts.PayoutSettleApi.as_view(outcome="paid"),
        name="payout-paid",
    ),
    path(
        "payouts/<int:payout_id>/rejected",
        payouts.PayoutSettleApi.as_view(outcome="rejected"),
        name="payout-rejected",
    ),
    path("reports", reports.ReportCreateApi.as_view(), name="report-create"),
    path("listings", listings.ListingListCreateApi.as_view(), name="listing-list"),
    path(
        "listings/<int:listing_id>",
        listings.ListingDetailApi.as_view(),
        name="listing-detail",
    ),
    path("purchases", purchases.PurchaseCreateApi.as_view(), name="purchase-create"),
    path("library", purchases.LibraryListApi.as_view(), name="library"),
    path("licenses", licenses.LicenseListApi.as_view(), name="license-list"),
    path("reviews", reviews.ReviewListCreateApi.as_view(), name="review-list"),
]
