"""The public data contract: envelope, Avro schemas, rules, registry, topic names, dead letters, signing."""
