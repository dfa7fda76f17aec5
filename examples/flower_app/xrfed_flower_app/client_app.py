"""The ClientApp: the xrfed device named by the node config (``device-id``, or ``partition-id`` in simulation)."""

from federation.flower import make_client_app

app = make_client_app()
