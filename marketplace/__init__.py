"""Who may do what and who is paid: licenses, listings, wallets, ledger, entitlements."""
