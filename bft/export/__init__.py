"""``bft export``: a run's datasets as Parquet with a dataset card, its final model as a save_pretrained folder with a model card."""
