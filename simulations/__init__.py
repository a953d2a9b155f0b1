"""kadshare simulations package."""
