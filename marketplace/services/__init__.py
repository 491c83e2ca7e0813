"""Every write the marketplace makes, one module per concern."""
