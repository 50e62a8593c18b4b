"""Chart QA data in one schema: local files and the hub, and the synthetic charts of the embedded default."""
