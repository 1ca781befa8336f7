"""The HTTP listener under every route: connection limits, guarded sites, the socket the command line binds."""
