"""tfmesh's common library: settings, server bootstrap, telemetry, errors, retries,
discovery, naming rules, blob storage and tensor conversion shared by every service."""
