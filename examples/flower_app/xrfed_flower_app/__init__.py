"""xrfed's demo experiment as a Flower App: xrfed devices as ClientApps, xrfed's exact LoRA aggregation as the
strategy (see docs/flower.md)."""
