"""Marketplace routes (REST API), included at the site root by ``config/urls.py``."""

from django.urls import path

from marketplace import api

app_name = "marketplace"

urlpatterns = [
    path("api/v1/wallet", api.WalletDetailApi.as_view(), name="wallet"),
    path("api/v1/wallet/transactions", api.WalletTransactionListApi.as_view(),
         name="wallet-transactions"),
    path("api/v1/wallet/top-ups", api.TopUpCreateApi.as_view(), name="top-up-create"),
    path("api/v1/listings", api.ListingListCreateApi.as_view(), name="listing-list"),
    path("api/v1/listings/<int:listing_id>", api.ListingDetailApi.as_view(),
         name="listing-detail"),
    path("api/v1/purchases", api.PurchaseCreateApi.as_view(), name="purchase-create"),
    path("api/v1/library", api.LibraryListApi.as_view(), name="library"),
    path("api/v1/licenses", api.LicenseListApi.as_view(), name="license-list"),
    path("api/v1/reviews", api.ReviewListCreateApi.as_view(), name="review-list"),
]
