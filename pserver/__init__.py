"""kadshare pserver package."""
