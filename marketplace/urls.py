"""Marketplace routes, included once by ``config/urls.py`` (namespace ``marketplace``): the
REST API (``api/urls.py``) under ``/api/v1/``, and the pages."""

from django.urls import include, path

from marketplace import views

app_name = "marketplace"

urlpatterns = [
    path("api/v1/", include("marketplace.api.urls")),
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
