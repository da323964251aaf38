"""polydiff.datasets: LightningDataModules, one per data source, each usable on your own files."""
