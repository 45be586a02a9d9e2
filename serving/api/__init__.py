"""The REST API: app factory, routes, dependencies and the one error mapping."""
