"""Shadow traffic's comparison, off the live path: Envoy copies a share of live requests
to the candidate and records both answers (``xds_server.mirror``); ``tap`` reads the
recordings from each proxy's admin, ``exchange`` decodes them, ``compare`` pairs and
compares them, ``observer`` runs it all for a shadow stage."""
