"""Who may see what: subscription config, filters, projection, masking, pseudonyms, audit records."""
