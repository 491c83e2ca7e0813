"""Marketplace routes (REST API and pages), included at the site root by ``config/urls.py``."""

from django.urls import path

from marketplace import views
from marketplace.api import licenses, listings, payouts, purchases, reports, reviews, wallet

app_name = "marketplace"

urlpatterns = [
    path("api/v1/wallet", wallet.WalletDetailApi.as_view(), name="wallet"),
    path(
        "api/v1/wallet/transactions",
        wallet.WalletTransactionListApi.as_view(),
        name="wallet-transactions",
    ),
    path("api/v1/wallet/top-ups", wallet.TopUpCreateApi.as_view(), name="top-up-create"),
    path("api/v1/wallet/statement", wallet.WalletStatementApi.as_view(), name="wallet-statement"),
    path("api/v1/payouts", payouts.PayoutListCreateApi.as_view(), name="payout-list"),
    path(
        "api/v1/payouts/<int:payout_id>/paid",
        payouts.PayoutSettleApi.as_view(outcome="paid"),
        name="payout-paid",
    ),
    path(
        "api/v1/payouts/<int:payout_id>/rejected",
        payouts.PayoutSettleApi.as_view(outcome="rejected"),
        name="payout-rejected",
    ),
    path("api/v1/reports", reports.ReportCreateApi.as_view(), name="report-create"),
    path("api/v1/listings", listings.ListingListCreateApi.as_view(), name="listing-list"),
    path(
        "api/v1/listings/<int:listing_id>",
        listings.ListingDetailApi.as_view(),
        name="listing-detail",
    ),
    path("api/v1/purchases", purchases.PurchaseCreateApi.as_view(), name="purchase-create"),
    path("api/v1/library", purchases.LibraryListApi.as_view(), name="library"),
    path("api/v1/licenses", licenses.LicenseListApi.as_view(), name="license-list"),
    path("api/v1/reviews", reviews.ReviewListCreateApi.as_view(), name="review-list"),
    # pages
    path("buy/<int:listing_id>/", views.purchase_confirm, name="purchase-confirm"),
    path("buy/<int:listing_id>/confirm/", views.purchase_submit, name="purchase-submit"),
    path("versions/<int:version_id>/listing/", views.listing_edit, name="listing-edit"),
    path("wallet/", views.wallet, name="wallet-page"),
    path("wallet/statement.csv", views.wallet_statement, name="wallet-statement-page"),
    path("wallet/payouts/", views.payouts, name="payouts-page"),
    path("library/", views.library, name="library-page"),
    path("earnings/", views.earnings, name="earnings-page"),
    path("versions/<int:version_id>/reviews/", views.review_submit, name="review-submit"),
    path("report/version/<int:version_id>/", views.report_version, name="report-version"),
    path("report/dataset/<int:dataset_id>/", views.report_dataset, name="report-dataset"),
]
