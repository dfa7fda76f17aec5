"""The ServerApp: the run config's experiment (``config``), centralized rounds with xrfed's strategy."""

from federation.flower import make_server_app

app = make_server_app()
