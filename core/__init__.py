"""Accounts, API tokens and the application error type: the lowest Django floor."""
