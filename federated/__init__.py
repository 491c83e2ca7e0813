"""Django side of federated training; the node-side engine lives in ``federated.engine``."""
