"""Queries, one module per aggregate: routers and use cases ask these instead of writing SQL of their own."""
