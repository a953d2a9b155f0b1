"""kadshare pclient package."""
