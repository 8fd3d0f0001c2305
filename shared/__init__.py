"""What both tiers need: schemas, the manifest, configuration, version pointers."""
