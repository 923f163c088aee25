"""REST API routers, one per area."""
