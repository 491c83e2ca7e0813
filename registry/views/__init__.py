"""The registry's pages, by resource: catalog (browse, model, version, dataset and creator
pages, upload), downloads (the entitlement-checked file, archive and dataset routes), images
(a version's sample images)."""
