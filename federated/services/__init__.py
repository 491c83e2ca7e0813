"""Every write of the federated app: nodes, dataset terms, jobs, progress, settlement,
publishing. Services take keyword-only arguments and run in a transaction."""
