"""Model families, one module each; see CONTRACT.md. Imported lazily by the registry."""
