"""Every write in the registry. One module per concern; import from the module."""
