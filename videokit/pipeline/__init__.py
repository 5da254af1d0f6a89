"""Rendering a planned story: the async runner, cache, manifest, events and forecasts."""
