"""The pipeline's stages, one declaration (``bft.pipeline.stage.Stage``) each, grouped by job:

- ``data``: seed, corpus, baseline_data, train_data
- ``training``: backward_model, seed_model, curation_model, final_model
- ``generation``: augment, curate
- ``rewrite``: rewrite (by a model, by M0, or keeping the text)
- ``evaluation``: eval_outputs, base_outputs, evaluate

Stage order: seed -> corpus -> backward_model -> augment -> seed_model -> curate_0 [-> curation_model_i ->
curate_i]* -> rewrite -> train_data -> final_model -> eval_outputs (+ base_outputs) -> evaluate.
"""
