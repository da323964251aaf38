"""Complete LightningCLI configs shipped with polydiff (YAML files, one folder per domain)."""
