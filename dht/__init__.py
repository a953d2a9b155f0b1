"""kadshare dht package."""
